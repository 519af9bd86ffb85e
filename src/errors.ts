/**
 * The one error registry of nethsm-replicator.
 *
 * Every error the project raises on purpose is a subclass of {@link NhrError} with a stable
 * `code` (`NHR_ERR_<AREA>_<PROBLEM>`), an operator-facing `hint` (printed by the CLI as `Try: …`),
 * an optional `cause`, and the context fields an operator needs (namespace, site, epoch, …).
 *
 * Contract: messages and context never carry secrets (passphrases, tokens, key material).
 * `docs/errors.md` lists every code in {@link ERROR_CLASSES}; a test keeps the two in step.
 */

/** Context an operator needs to act on an error. All fields optional; none may hold a secret. */
export interface ErrorContext {
  namespace?: string;
  site?: string;
  epoch?: number;
  /** NetHSM API operation or replicator step, e.g. `POST /system/backup`. */
  operation?: string;
  /** File path or config path the error is about. */
  path?: string;
}

export interface NhrErrorOptions extends ErrorContext {
  cause?: unknown;
  /** Overrides the class's default hint. */
  hint?: string;
}

/** Base class: never thrown directly. */
export class NhrError extends Error {
  static readonly code: string = 'NHR_ERR_INTERNAL';
  static readonly defaultHint: string = 'This is a bug; report it with the log lines around it.';
  static readonly retryable: boolean = false;

  readonly code: string;
  readonly hint: string;
  readonly namespace?: string;
  readonly site?: string;
  readonly epoch?: number;
  readonly operation?: string;
  readonly path?: string;

  constructor(message: string, options: NhrErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const ctor = new.target as typeof NhrError;
    this.name = ctor.name;
    this.code = ctor.code;
    this.hint = options.hint ?? ctor.defaultHint;
    if (options.namespace !== undefined) this.namespace = options.namespace;
    if (options.site !== undefined) this.site = options.site;
    if (options.epoch !== undefined) this.epoch = options.epoch;
    if (options.operation !== undefined) this.operation = options.operation;
    if (options.path !== undefined) this.path = options.path;
  }

  /** Whether retrying the same action later may succeed (instance may refine the class default). */
  get retryable(): boolean {
    return (this.constructor as typeof NhrError).retryable;
  }

  /** A log-friendly object: code, message, context; no stack, no secrets. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { code: this.code, message: this.message };
    for (const k of ['namespace', 'site', 'epoch', 'operation', 'path'] as const) {
      if (this[k] !== undefined) out[k] = this[k];
    }
    return out;
  }
}

export class InternalError extends NhrError {
  static override readonly code = 'NHR_ERR_INTERNAL';
}

// ---------------------------------------------------------------------------------------------
// Input (CLI arguments and other generic validation)

export class InputInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_INPUT_INVALID';
  static override readonly defaultHint = 'Check the command line against `nethsm-replicator help <command>`.';
}

export class PassphraseSourceError extends NhrError {
  static override readonly code = 'NHR_ERR_INPUT_PASSPHRASE_SOURCE';
  static override readonly defaultHint =
    'Give the passphrase with --passphrase-file <file> or --passphrase-env <VAR>, or run on a terminal to be prompted.';
}

export class OutputExistsError extends NhrError {
  static override readonly code = 'NHR_ERR_INPUT_OUTPUT_EXISTS';
  static override readonly defaultHint = 'Choose another output path or remove the existing file first.';
}

// ---------------------------------------------------------------------------------------------
// Configuration

export class ConfigInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_CONFIG_INVALID';
  static override readonly defaultHint = 'Fix the named setting in the config file; `nethsm-replicator check-config` validates it.';
  /** Every problem found, one sentence each, naming its setting path; `[message]` when built without a list. */
  readonly problems: readonly string[];

  constructor(message: string, options: NhrErrorOptions & { problems?: readonly string[] } = {}) {
    super(message, options);
    this.problems = Object.freeze([...(options.problems ?? [message])]);
  }
}

export class ConfigSecretError extends NhrError {
  static override readonly code = 'NHR_ERR_CONFIG_SECRET_UNREADABLE';
  static override readonly defaultHint =
    'Make the secret file readable by the service (systemd LoadCredential=) or set the named environment variable.';
}

// ---------------------------------------------------------------------------------------------
// NetHSM API (client side)

/** The NetHSM answered with an error status. */
export class NetHsmHttpError extends NhrError {
  static override readonly code: string = 'NHR_ERR_NETHSM_HTTP';
  static override readonly defaultHint: string = 'The message says what the NetHSM answered; check the account\'s credentials and role, and the device state.';
  readonly status: number;
  /** The NetHSM's `message` field, when its body had one. */
  readonly nethsmMessage: string | undefined;

  /**
   * The message carries the NetHSM's answer: its own `message` when it sent one, otherwise what the status means for
   * this request (the firmware answers 401 and 403 with an empty body), naming `user` when the request carried one.
   */
  constructor(status: number, nethsmMessage: string | undefined, options: NhrErrorOptions & { user?: string; message?: string }) {
    super(options.message ?? `NetHSM answered ${describeStatus(status, nethsmMessage, options.user)}${options.operation ? ` (${options.operation})` : ''}`, {
      ...options,
      hint: options.hint ?? hintForStatus(status),
    });
    this.status = status;
    this.nethsmMessage = nethsmMessage;
  }

  /** 412 (wrong state), 429 (rate limit) and 5xx may pass; 4xx otherwise will not. */
  override get retryable(): boolean {
    return this.status === 412 || this.status === 429 || this.status === 408 || this.status >= 500;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), status: this.status };
  }
}

/** `401 Unauthorized: it refused the credentials of user admin (…)`, or the NetHSM's own message after the status. */
function describeStatus(status: number, nethsmMessage: string | undefined, user: string | undefined): string {
  const head = `${status}${STATUS_TEXT[status] ? ` ${STATUS_TEXT[status]}` : ''}`;
  if (nethsmMessage) return `${head}: ${nethsmMessage}`;
  const who = user === undefined ? '' : ` of user ${user}`;
  if (status === 401) return `${head}: it refused the credentials${who} (wrong passphrase, or no such user)`;
  if (status === 403) return `${head}: ${user === undefined ? 'this request' : `user ${user}`} may not do this (its role or namespace)`;
  if (status === 404) return `${head}: no such resource`;
  if (status === 412) return `${head}: the NetHSM is not in a state that allows this (Locked, Unprovisioned?)`;
  if (status === 429) return `${head}: rate-limited after a failed login of this user`;
  return head;
}

function hintForStatus(status: number): string {
  if (status === 401) return 'Check the user and passphrase the daemon logs in with; `nethsm-replicator check-config` checks every credential.';
  if (status === 403) return "Check the user's role (and namespace) on the NetHSM; `nethsm-replicator check-config` checks the daemon's accounts.";
  if (status === 412) return 'Check the NetHSM\'s state (GET /health/state): unlock it if it is Locked.';
  if (status === 429) return 'The NetHSM refuses a user for a second after a failed login; retry, and fix the credential if it is wrong.';
  if (status >= 500) return 'The NetHSM failed; check its state and logs, then retry.';
  return NetHsmHttpError.defaultHint;
}

/** The HTTP reason phrases of the statuses the NetHSM answers with (FACTS §10). */
const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Timeout',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * The NetHSM refused (401) a credential the config names: the message names the setting, so the operator knows which
 * secret to fix. Raised by clients made with a credential label (`withAuth(user, pw, { setting, name })`).
 */
export class NetHsmCredentialRefusedError extends NetHsmHttpError {
  static override readonly code = 'NHR_ERR_NETHSM_CREDENTIAL_REFUSED';
  static override readonly defaultHint =
    'Put the NetHSM passphrase of that user into the secret the setting names (or fix the user), then restart the daemon; `nethsm-replicator check-config` checks every credential.';
  /** The config path of the credential, e.g. `nethsm.credentials.admin`. */
  readonly setting: string;
  readonly user: string;

  /**
   * `status`: 401 (wrong passphrase or user; the default), 403 (the account lacks the role) or 429 (held back for a
   * second after a refused login, which means the same). `path` is set to the setting.
   */
  constructor(
    credential: { setting: string; name: string; user?: string },
    options: NhrErrorOptions & { nethsmMessage?: string; status?: 401 | 403 | 429; message?: string },
  ) {
    const status = options.status ?? 401;
    const who = credential.user === undefined ? '' : ` for user ${credential.user}`;
    super(status, options.nethsmMessage, {
      ...options,
      path: options.path ?? credential.setting,
      hint: options.hint ?? NetHsmCredentialRefusedError.defaultHint,
      message:
        options.message ??
        `the NetHSM refused the ${credential.name} credential (${credential.setting})${who}: ${status} ${STATUS_TEXT[status] ?? ''}`.trimEnd() +
          `${options.nethsmMessage ? ` (${options.nethsmMessage})` : ''}${options.operation ? ` on ${options.operation}` : ''}`,
    });
    this.setting = credential.setting;
    this.user = credential.user ?? '';
  }

  /** Not retryable as it is, whatever its status: the same call fails until the secret or the account is fixed. */
  override get retryable(): boolean {
    return false;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), setting: this.setting, user: this.user };
  }
}

export class NetHsmUnreachableError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_UNREACHABLE';
  static override readonly defaultHint = 'Check that the NetHSM is up and its URL, port and network path are right.';
  static override readonly retryable = true;
}

/**
 * The NetHSM answers but is Locked (its domain key is not in memory: after a reboot without unattended boot, or an
 * administrator's `POST /lock`). Nothing but health and unlock works until someone unlocks it; the daemon keeps
 * probing and resumes by itself. Retryable: the same call succeeds once it is unlocked.
 */
export class NetHsmLockedError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_LOCKED';
  static override readonly defaultHint =
    'Unlock it (POST /unlock with the unlock passphrase, e.g. `nitropy nethsm unlock`); the daemon sees it within recovery.retryInterval and resumes.';
  static override readonly retryable = true;
}

/**
 * The NetHSM answers but is neither Operational nor Locked: `Unprovisioned` (empty) or `Failed` (its cluster store is
 * unhealthy). The message names the state. Retryable: the daemon keeps probing.
 */
export class NetHsmNotOperationalError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_NOT_OPERATIONAL';
  static override readonly defaultHint =
    'Unprovisioned: is nethsm.url the right device? A new replica site joins with `nethsm-replicator init-replica`. Failed: its cluster store is unhealthy; see GET /health/diagnose.';
  static override readonly retryable = true;
}

export class NetHsmTimeoutError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_TIMEOUT';
  static override readonly defaultHint = 'The NetHSM did not answer in time; check its load and the network, or raise the timeout.';
  static override readonly retryable = true;
}

export class TlsPinMismatchError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_TLS_PIN_MISMATCH';
  static override readonly defaultHint =
    'The server certificate is not the pinned one: verify the device, then update the pinned SHA-256 fingerprint.';
}

/** TLS verification against the configured CA failed (untrusted chain, expired, wrong host name). */
export class NetHsmTlsUntrustedError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_TLS_UNTRUSTED';
  static override readonly defaultHint =
    'The server certificate does not verify against the configured CA (or names another host); check the CA file and the URL, or pin the fingerprint instead.';
}

export class NetHsmResponseInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_NETHSM_RESPONSE_INVALID';
  static override readonly defaultHint = 'The server does not answer like a NetHSM; check the URL points at the NetHSM API.';
}

// ---------------------------------------------------------------------------------------------
// Backup files

export class BackupNotABackupError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_NOT_A_BACKUP';
  static override readonly defaultHint = 'The file does not start with the NetHSM backup magic; check you picked the right file.';
}

export class BackupUnsupportedVersionError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_UNSUPPORTED_VERSION';
  static override readonly defaultHint = 'Only backup format versions 0 and 1 are supported.';
}

export class BackupWrongPassphraseError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_WRONG_PASSPHRASE';
  static override readonly defaultHint =
    'The backup passphrase does not open this file; use the passphrase that was set when the backup was made.';
}

export class BackupCorruptedError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_CORRUPTED';
  static override readonly defaultHint = 'The file is damaged; take a fresh backup or use another copy.';
  /** Byte offset of the field that failed, when known. */
  readonly offset: number | undefined;
  /** Index of the entry that failed (0-based), when the failure is in an entry. */
  readonly entryIndex: number | undefined;

  constructor(message: string, options: NhrErrorOptions & { offset?: number; entryIndex?: number } = {}) {
    super(message, options);
    this.offset = options.offset;
    this.entryIndex = options.entryIndex;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), offset: this.offset, entryIndex: this.entryIndex };
  }
}

export class BackupTruncatedError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_TRUNCATED';
  static override readonly defaultHint = 'The file ends early; it was cut during copy or download. Use a complete copy.';
  readonly offset: number | undefined;

  constructor(message: string, options: NhrErrorOptions & { offset?: number } = {}) {
    super(message, options);
    this.offset = options.offset;
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), offset: this.offset };
  }
}

export class BackupNamespaceNotFoundError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND';
  static override readonly defaultHint = 'List what the backup holds with `nethsm-replicator backup inspect <file>`.';
}

export class BackupKeyNotFoundError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_KEY_NOT_FOUND';
  static override readonly defaultHint = 'List the keys the backup holds with `nethsm-replicator backup inspect <file>`.';
}

export class BackupKindMismatchError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_KIND_MISMATCH';
  static override readonly defaultHint =
    'Pass a device backup, a namespace backup or a key backup where the command asks for it (see `backup inspect`).';
}

export class BackupManifestInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_MANIFEST_INVALID';
  static override readonly defaultHint =
    'The namespace/key backup\'s manifest is malformed or does not match the entries; make the file again with `backup extract-namespace` or `key-backup export`.';
}

export class BackupOutOfOrderError extends NhrError {
  static override readonly code = 'NHR_ERR_BACKUP_OUT_OF_ORDER';
  static override readonly defaultHint =
    'The file\'s entries are not in the NetHSM firmware\'s order, so it cannot be merged safely; use a backup taken from the device or made by nethsm-replicator.';
}

// ---------------------------------------------------------------------------------------------
// init-replica (bootstrapping a NetHSM into the replication domain)

/** init-replica would write to a device it must not: not Unprovisioned, or the operator did not confirm. Nothing was written. */
export class InitReplicaRefusedError extends NhrError {
  static override readonly code = 'NHR_ERR_INIT_REPLICA_REFUSED';
  static override readonly defaultHint =
    'init-replica only restores onto an Unprovisioned NetHSM (factory reset it first, if that is really meant); check the target URL in the config.';
}

/** The restore ran but the device did not end Locked or Operational. */
export class InitReplicaFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_INIT_REPLICA_FAILED';
  static override readonly defaultHint = 'Check the NetHSM\'s state and logs; if it is still Unprovisioned, run init-replica again.';
}

// ---------------------------------------------------------------------------------------------
// Admin API (CLI ↔ running daemon)

export class AdminUnavailableError extends NhrError {
  static override readonly code = 'NHR_ERR_ADMIN_UNAVAILABLE';
  static override readonly defaultHint =
    'Is the daemon running? Check `systemctl status nethsm-replicator` and that --config names the same state directory.';
  static override readonly retryable = true;
}

/**
 * An error the daemon reported through the admin API. It keeps the daemon's own code, message and hint,
 * so the operator sees the same `Error:`/`Try:` lines as if the command had run in-process.
 */
export class AdminRemoteError extends NhrError {
  static override readonly code = 'NHR_ERR_ADMIN_REMOTE';
  readonly status: number;

  constructor(status: number, remote: { code?: string; message?: string; hint?: string } & ErrorContext) {
    super(remote.message ?? `daemon answered ${status}`, { ...remote, hint: remote.hint ?? 'See the daemon log for details.' });
    this.status = status;
    if (typeof remote.code === 'string' && /^NHR_ERR_[A-Z0-9_]+$/.test(remote.code)) {
      // Report the daemon's code, not this transport wrapper's.
      Object.defineProperty(this, 'code', { value: remote.code, enumerable: true });
    }
  }

  override get retryable(): boolean {
    return this.status >= 500 && this.status !== 501;
  }
}

// ---------------------------------------------------------------------------------------------
// Peer API (daemon ↔ daemon)

export class PeerUnreachableError extends NhrError {
  static override readonly code = 'NHR_ERR_PEER_UNREACHABLE';
  static override readonly defaultHint = 'Check the peer daemon is running and the network path and port between the sites.';
  static override readonly retryable = true;
}

/** The peer presented a certificate that is not the configured peer's (wrong CA, wrong CN or fingerprint). */
export class PeerIdentityError extends NhrError {
  static override readonly code = 'NHR_ERR_PEER_IDENTITY';
  static override readonly defaultHint =
    "Check the peer's certificate: it must be issued by the group CA with CN equal to the peer's site name (and match any pinned fingerprint).";
}

/** A peer sent a message that does not have the protocol's shape. */
export class PeerMessageInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_PEER_MESSAGE_INVALID';
  static override readonly defaultHint = 'Check both sites run compatible nethsm-replicator versions.';
}

/** The peer refused a request; keeps the peer's code so logs show why. */
export class PeerRefusedError extends NhrError {
  static override readonly code = 'NHR_ERR_PEER_REFUSED';
  static override readonly defaultHint = "The message carries the peer's reason; its log has the details.";
  readonly status: number;
  readonly remoteCode: string | undefined;

  constructor(status: number, remote: { code?: string; message?: string }, options: NhrErrorOptions = {}) {
    super(`peer refused (${status}${remote.code ? ` ${remote.code}` : ''}): ${remote.message ?? 'no reason given'}`, options);
    this.status = status;
    this.remoteCode = remote.code;
  }

  override get retryable(): boolean {
    return this.status >= 500 || this.status === 429;
  }
}

// ---------------------------------------------------------------------------------------------
// State store (SQLite) and namespaces

export class StateOpenFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_OPEN_FAILED';
  static override readonly defaultHint =
    'Check the state directory exists, is writable by the service user, and that no other daemon uses it.';
}

/** The state directory cannot be created or written, or is on a pseudo filesystem: a configuration error (exit 78). */
export class StateDirUnusableError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_DIR_UNUSABLE';
  static override readonly defaultHint =
    'Set stateDir to a directory on local storage that the service user owns (the shipped unit uses StateDirectory=nethsm-replicator: /var/lib/nethsm-replicator).';
}

/** Another daemon holds the state directory's lock (src/state/dir-lock.ts); this one changed nothing there. */
export class StateLockedError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_LOCKED';
  static override readonly defaultHint =
    'Only one daemon may use a state directory: stop the other one first (`systemctl status nethsm-replicator` shows it), or give this one its own stateDir.';
}

export class StateMigrationFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_MIGRATION_FAILED';
  static override readonly defaultHint =
    'The database was left at the version the message names; fix the cause (disk, permissions, a newer database) and restart.';
}

/**
 * The state database's write-ahead log could not be synced to disk after a group commit (src/state/group-commit.ts):
 * the writes of that group may not survive a power loss, so none of them was acknowledged, and the store takes no
 * grouped write any more (the gateway refuses mutations of primary namespaces with 503) until the daemon restarts.
 */
export class StateSyncFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_SYNC_FAILED';
  static override readonly defaultHint =
    'Check the disk under the state directory (kernel log, free space, I/O errors), then restart the daemon: it reads back what reached the disk and settles open writes from the NetHSM.';
}

/**
 * A write to the state database failed for want of storage, not for a bug: the disk under the state directory is full,
 * read-only or failing (SQLite's SQLITE_FULL, SQLITE_READONLY*, SQLITE_IOERR*, SQLITE_CANTOPEN). Nothing of that write
 * was kept; what needed it (a stream change, a sync's record, a gateway write) failed and is retried. The store keeps
 * the failure (`StateStore.writeFailure`) until a write succeeds again: `/health/ready` fails its `state` check meanwhile.
 */
export class StateWriteFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_STATE_WRITE_FAILED';
  static override readonly defaultHint =
    'Free space on the filesystem of the state directory (`df` on stateDir; the daemon also writes device backups to its work/), or fix that disk (kernel log; a read-only remount); the daemon retries by itself, no restart needed.';
  static override readonly retryable = true;
}

export class NamespaceUnknownError extends NhrError {
  static override readonly code = 'NHR_ERR_NAMESPACE_UNKNOWN';
  static override readonly defaultHint = 'List the configured namespaces with `nethsm-replicator status`; add it to the config first.';
}

// ---------------------------------------------------------------------------------------------
// Roles and epochs

/** Why a promote was refused; `force` overrides every reason except `already-primary`. */
export type PromoteRefusal = 'already-primary' | 'behind' | 'never-synced' | 'last-sync-failed' | 'fenced' | 'primary-alive' | 'handover-pending';

export class RolePromoteRefusedError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_PROMOTE_REFUSED';
  static override readonly defaultHint =
    'Sync the namespace first (`nethsm-replicator sync <ns>`), or accept the risk with `promote --force`.';
  readonly reasons: readonly PromoteRefusal[];

  constructor(message: string, options: NhrErrorOptions & { reasons: readonly PromoteRefusal[] }) {
    super(message, options);
    this.reasons = Object.freeze([...options.reasons]);
  }

  override toJSON(): Record<string, unknown> {
    return { ...super.toJSON(), reasons: this.reasons };
  }
}

/** A peer spoke for an epoch older than the one this site holds: its message is refused. */
export class PeerStaleEpochError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_STALE_EPOCH';
  static override readonly defaultHint =
    'The peer has not yet learned of the newer epoch; it will be fenced or resync when it does. Check its log.';
}

export class RoleNotPrimaryError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_NOT_PRIMARY';
  static override readonly defaultHint = 'Run this at the site that is primary for the namespace (see `nethsm-replicator status`).';
}

/**
 * A demote stepped down here (the namespace is read-only at this site, its administrators removed) but asking the
 * successor to take over failed: no site is primary for the namespace until the handover is run again or this site
 * takes it back. Retryable: the same demote finishes it once the successor answers.
 */
export class RoleHandoverFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_HANDOVER_FAILED';
  static override readonly defaultHint =
    'Run the same `nethsm-replicator demote <ns> --to <site>` again once that site answers, or take it back here with `nethsm-replicator promote <ns> --force` (docs/operations.md §3).';
  static override readonly retryable = true;
}

/**
 * This site became primary of the namespace (the role change is made and persisted: promote, or resuming leadership)
 * but putting the namespace's administrators back on its NetHSM failed (the NetHSM refused or failed the backup or the
 * restore, is Locked or unreachable, the source file is unreadable). Writes by the namespace's users are refused meanwhile
 * (401 at the NetHSM; 503 NHR_ERR_GATEWAY_ADMINS_PENDING at the gateway). The restore is recorded and retried by the
 * daemon (admin-restorer.ts); the cause is the last attempt's error.
 */
export class RoleAdminsNotRestoredError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_ADMINS_NOT_RESTORED';
  static override readonly defaultHint =
    "The daemon retries by itself. Check the NetHSM's state (`nethsm-replicator status`: the nethsm member, Locked → unlock it) and the cause, then retry at once with `nethsm-replicator admins restore <namespace>`; do not promote again (docs/operations.md, \"Promoted without its administrators\").";
  static override readonly retryable = true;
}

/**
 * The file a pending administrator restore puts the namespace's users back from (a fence's quarantine file, for
 * resuming leadership) is gone: no attempt can restore them. The record is kept (writes stay refused, `status` says
 * so) until the file is back or the operator restored the users by hand and forgot it (`admins restore --forget`).
 */
export class RoleAdminsSourceMissingError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_ADMINS_SOURCE_MISSING';
  static override readonly defaultHint =
    "Put the file back at the path named (from a backup of the state directory) and run `nethsm-replicator admins restore <namespace>`; or put the namespace's administrators back by hand with the NetHSM's user API (`PUT /api/v1/users/<namespace>~<user>`, role Administrator, as the namespace's replication account, its only administrator now), then `nethsm-replicator admins restore <namespace> --forget` (docs/operations.md §4.1).";
}

/** Two sites claim to be primary for one namespace at the same epoch. Both fence; an operator promotes one. */
export class RoleSplitBrainError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_SPLIT_BRAIN';
  static override readonly defaultHint =
    'Both sites are fenced for this namespace. Choose the site to keep, run `promote --force <ns>` there; the other resyncs.';
}

/** The namespace's role changed between deciding a transition and persisting it; decide again. */
export class RoleStateChangedError extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_STATE_CHANGED';
  static override readonly defaultHint = 'Another role change happened at the same time; check `status` and retry.';
  static override readonly retryable = true;
}

// ---------------------------------------------------------------------------------------------
// Automatic failover (etcd)

/** etcd did not answer (no member reachable, no majority, timeout). A primary that cannot renew stops writes. */
export class FailoverEtcdUnreachableError extends NhrError {
  static override readonly code = 'NHR_ERR_FAILOVER_ETCD_UNREACHABLE';
  static override readonly defaultHint =
    "Check this site's etcd member and the links to the other members and the witness (`etcdctl endpoint health --cluster`).";
  static override readonly retryable = true;
}

/** An operator's promote with automatic failover on, while another site holds the leader key (its lease is live). */
export class FailoverLeaderHeldError extends NhrError {
  static override readonly code = 'NHR_ERR_FAILOVER_LEADER_HELD';
  static override readonly defaultHint =
    'The primary still holds the leader key: run `demote <ns> --to <this site>` at the primary for a switchover, or wait for its lease to expire.';
}

// ---------------------------------------------------------------------------------------------
// Gateway (the NetHSM-compatible proxy applications use)

/** A mutation for a namespace that is a replica (or fenced) at this site; names the primary site and epoch. */
export class GatewayReadOnlyError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_READ_ONLY';
  static override readonly defaultHint =
    "Send writes for this namespace to its primary site's gateway (see `nethsm-replicator status`), or promote this site.";
}

/** A device-level call the gateway does not serve (restore, factory reset, backup passphrase, cluster, replicated namespace lifecycle). */
export class GatewayCallRefusedError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_CALL_REFUSED';
  static override readonly defaultHint =
    'Do this on the NetHSM directly during maintenance (docs/gateway.md lists why each call is refused), then run `nethsm-replicator sync`.';
}

/** A request the gateway cannot classify with certainty (path traversal, encoded slashes, ambiguous credentials). Not forwarded. */
export class GatewayRequestInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_REQUEST_INVALID';
  static override readonly defaultHint = 'Send the request as the NetHSM API describes it: a plain /api/v1 path and one HTTP Basic header.';
}

/** A mutation waited for a merge-restore (or for a write of the same key in flight) longer than the gateway's bound; answered 503 with Retry-After. */
export class GatewayHoldTimeoutError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_HOLD_TIMEOUT';
  static override readonly defaultHint = 'A merge-restore is running at this site; retry after the Retry-After delay.';
  static override readonly retryable = true;
}

/**
 * Writes to a namespace primary here that a merge-restore erased are still being re-applied from its change log
 * (docs/concurrency.md, "Racing writes re-applied"): a new write could be undone by the replay of an earlier change of
 * the same key, so it is refused with 503 and Retry-After until the replay is done. Status names the replay.
 */
export class GatewayReplayPendingError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_REPLAY_PENDING';
  static override readonly defaultHint =
    'Retry after the Retry-After delay. If it lasts, `nethsm-replicator status` names the re-apply and its last error (usually the NetHSM is unreachable or refusing the replication account).';
  static override readonly retryable = true;
}

/**
 * A write to a namespace primary here whose administrators are not back on the NetHSM yet (a promote's restore failed
 * and is being retried): the NetHSM would answer the namespace's users 401. Answered 503 with Retry-After.
 */
export class GatewayAdminsPendingError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_ADMINS_PENDING';
  static override readonly defaultHint =
    'Retry after the Retry-After delay. If it lasts, `nethsm-replicator status` names the pending administrator restore and its last error (usually the NetHSM is Locked or unreachable).';
  static override readonly retryable = true;
}

/**
 * This site's NetHSM is down (unreachable, Locked, Failed) and the call can only be served by it: a write for a namespace
 * primary here (never sent to a replica), a root-namespace or unreplicated call, or a call that came from another gateway.
 * Answered 503 with Retry-After.
 */
export class GatewayLocalDownError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_LOCAL_DOWN';
  static override readonly defaultHint =
    "Bring this site's NetHSM back (`nethsm-replicator status` names its state); writes for its primary namespaces resume then. To take writes elsewhere meanwhile, promote another site.";
  static override readonly retryable = true;
}

/** This site's NetHSM is down and no peer gateway can serve the call (each peer's reason is named: down, lagging past maxLag, …). */
export class GatewayNoPeerError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_NO_PEER';
  static override readonly defaultHint =
    "Bring this site's NetHSM back, or a peer named in the message (its NetHSM, its gateway, or its replica's sync: `nethsm-replicator status` there).";
  static override readonly retryable = true;
}

/** A write hold could not start: mutations already in flight did not finish within the bound. Nothing was restored. */
export class GatewayDrainTimeoutError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_DRAIN_TIMEOUT';
  static override readonly defaultHint = 'A write through the gateway is stuck (slow client or NetHSM); the restore is retried on the next sync.';
  static override readonly retryable = true;
}

/** The change-capture hook refused to record a primary-namespace mutation; it was not forwarded (503). */
export class GatewayCaptureFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_CAPTURE_FAILED';
  static override readonly defaultHint = "The daemon could not record the change (see its log: state store, transport keys); retry shortly.";
  static override readonly retryable = true;
}

/** A write's body (or a body sent without credentials) is larger than the gateway accepts; answered 413, not forwarded. */
export class GatewayBodyTooLargeError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_BODY_TOO_LARGE';
  static override readonly defaultHint =
    'Send a smaller body (the NetHSM takes at most 1 MiB for writes); raise gateway.maxWriteBodyBytes only for a NetHSM that takes more.';
}

/** A request body (or head) did not arrive within the gateway's bound; answered 408 and the connection closed, not forwarded. */
export class GatewayBodyTimeoutError extends NhrError {
  static override readonly code = 'NHR_ERR_GATEWAY_BODY_TIMEOUT';
  static override readonly defaultHint =
    'The client sent its request too slowly (or stalled); check its network, or raise gateway.writeBodyTimeout / gateway.requestTimeout.';
  static override readonly retryable = true;
}

// ---------------------------------------------------------------------------------------------
// Fencing (src/concurrency/: the device barrier and fencing tokens)

/**
 * A device step (sync, stream apply, repair, administrator strip or restore, fence export) was decided under an epoch,
 * role or pause state that changed before it reached the device; it was abandoned with nothing written.
 */
export class FenceTokenStaleError extends NhrError {
  static override readonly code = 'NHR_ERR_FENCE_TOKEN_STALE';
  static override readonly defaultHint = 'Nothing to do: the step was decided before a promote, demote, fence or pause and was dropped; `status` shows what runs now.';
}

// ---------------------------------------------------------------------------------------------
// Snapshot replication

/** An operator's `sync` of a namespace paused at this site; nothing was done. */
export class SyncPausedError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_PAUSED';
  static override readonly defaultHint = 'Run `nethsm-replicator resume <ns>` first, or `sync --force <ns>` to sync it while it stays paused.';
}

/**
 * A sync of a namespace fenced at this site whose fence has not written its quarantine export yet (the export failed:
 * the NetHSM was unreachable or locked). The sync's restore would erase what this former primary held and its
 * successor may never have got; nothing was done. The fence is retried by the daemon (each answered status probe of
 * the new primary), and its resync follows the export.
 */
export class SyncFenceExportPendingError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_FENCE_EXPORT_PENDING';
  static override readonly defaultHint =
    'Bring this site\'s NetHSM back (`nethsm-replicator status` names what fails); the daemon then writes the quarantine export and resyncs by itself.';
  static override readonly retryable = true;
}

/** A replica site's device already holds a namespace it was never synced for; nothing was changed. */
export class SyncNamespaceExistsError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_NAMESPACE_EXISTS';
  static override readonly defaultHint =
    'Check what the device holds; to replace it (a backup of it is saved first) run `nethsm-replicator sync <ns> --on-existing=remove`.';
}

/**
 * An operator's `sync` found a sync of the namespace already running and it did not end within the answer bound; the
 * message says what it has been doing and for how long. Nothing was refused: one more sync runs after it.
 */
export class SyncBusyError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_BUSY';
  static override readonly defaultHint = '`nethsm-replicator status` shows when the running sync ends and the outcome of the one after it.';
  static override readonly retryable = true;
}

/**
 * A sync abandoned because the daemon is stopping: its snapshot download, its device backup before the restore or its
 * wait for the restore's exclusive hold was cut (or it had not started one) before anything touched the device for it
 * (daemon close(); sync.ts `stop`). Not a failed sync: nothing is recorded against
 * the namespace or the primary. Not retryable here: this daemon takes no more syncs; the next start does.
 */
export class SyncDaemonStoppingError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_DAEMON_STOPPING';
  static override readonly defaultHint = 'Start the daemon again (`systemctl start nethsm-replicator`) and run `nethsm-replicator sync <ns>` again; its schedule also syncs it after the start.';
}

/**
 * A device backup only read was cut because the daemon is stopping (close()): an early B1, an apply's B1 before its
 * restore, or a backup serving a peer's snapshot or device backup, running or still waiting for its barrier hold or its
 * turn at the device; or an apply's wait for its exclusive hold (docs/operations.md, "Stopping the daemon"). Nothing
 * changed on the device, so it is not a device failure: the member monitor does not count it, and a sync it belonged
 * to is abandoned (NHR_ERR_SYNC_DAEMON_STOPPING), not failed. Retryable: a peer that asked for it asks again once this
 * daemon runs again.
 */
export class DaemonStoppingError extends NhrError {
  static override readonly code = 'NHR_ERR_DAEMON_STOPPING';
  static override readonly defaultHint = 'Start the daemon again (`systemctl start nethsm-replicator`); what the backup was for runs again after the start.';
  static override readonly retryable = true;
}

/** Writes outside the namespace kept landing between the daemon's backups; the restore was not attempted. */
export class SyncRaceError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_RACE';
  static override readonly defaultHint =
    'Another client keeps writing to the device during syncs; send writes through the gateway, which holds them during restores.';
  static override readonly retryable = true;
}

/** After a restore, entries outside the namespace were missing or changed, or the namespace is not as merged. */
export class SyncVerifyFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_VERIFY_FAILED';
  static override readonly defaultHint =
    'The pre-restore device backup was kept at the path in the message: compare it with the device and restore what was lost.';
}

/**
 * The namespace on this device held entries nobody replicated (foreign writes) that the snapshot's restore would
 * delete, and saving them to the quarantine folder failed: the restore was not attempted, the device is unchanged.
 */
export class SyncQuarantineFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_QUARANTINE_FAILED';
  static override readonly defaultHint =
    "Make the state directory's quarantine/ folder writable and give it space (the cause says what failed); the next sync saves the entries and then restores.";
}

/** `quarantine ack <file>`: no quarantine file of that name in this site's `quarantine/` folder. Nothing was recorded. */
export class QuarantineFileUnknownError extends NhrError {
  static override readonly code = 'NHR_ERR_QUARANTINE_UNKNOWN_FILE';
  static override readonly defaultHint = 'Give a file name exactly as `nethsm-replicator quarantine list` shows it, at the site that wrote it.';
}

/**
 * A snapshot's device backup was admitted after a restore at the primary erased changes its position claims, and they
 * are not re-applied yet (docs/concurrency.md, "Racing writes re-applied"): serving it would make the replica resume
 * after changes it never got. Nothing was served; the replica's sync fails and is retried.
 */
export class SyncSourceReplayingError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_SOURCE_REPLAYING';
  static override readonly defaultHint =
    "Retry the sync in a moment; if it lasts, `nethsm-replicator status` at the primary shows the pending re-apply and why it fails.";
  static override readonly retryable = true;
}

/**
 * An anti-entropy pass's inventory of a namespace was asked of its primary while a restore there had erased writes of
 * the namespace that are not re-applied yet, or its reads may have overlapped such a restore (docs/anti-entropy.md,
 * "A primary mid-restore"): the primary's device may lack acknowledged keys for a while, and a replica would take
 * them for extras and delete them. The answer is refused (or cut off with this code); the replica repairs nothing
 * for the namespace in that pass. Transient: the next pass runs once the re-apply is done.
 */
export class AntiEntropySourceReplayingError extends NhrError {
  static override readonly code = 'NHR_ERR_ANTIENTROPY_SOURCE_REPLAYING';
  static override readonly defaultHint =
    'Nothing to do: the next anti-entropy pass compares again once the primary has re-applied the erased writes; if it lasts, `nethsm-replicator status` at the primary shows the pending re-apply and why it fails.';
  static override readonly retryable = true;
}

/**
 * An anti-entropy pass cannot run against the namespace's primary as it is: it runs an older nethsm-replicator that
 * serves no inventory ranges, and its one-answer inventory of the namespace holds more keys than one answer may
 * (MAX_INVENTORY_KEYS) or is too large to read as one string. Not retryable against the same primary version: the
 * replica asks it again only once the primary answers as another version (or after this daemon's restart).
 */
export class AntiEntropyPrimaryTooOldError extends NhrError {
  static override readonly code = 'NHR_ERR_ANTIENTROPY_PRIMARY_TOO_OLD';
  static override readonly defaultHint =
    "Upgrade nethsm-replicator at the primary: its streamed inventory ranges have no such limit. Until then this namespace's anti-entropy passes (the scheduled ones, and the one after the primary's restart) do not run; snapshot syncs still do.";
}

/** A snapshot older than this site's epoch, or from a site that is not the namespace's primary. */
export class SyncStaleSnapshotError extends NhrError {
  static override readonly code = 'NHR_ERR_SYNC_STALE_SNAPSHOT';
  static override readonly defaultHint = "Check the sites' roles with `nethsm-replicator status` at each site.";
}

// ---------------------------------------------------------------------------------------------
// Key material in the stream (envelopes, transport keys, replicated generation)

/**
 * An envelope that is malformed, addressed to another site, key or fingerprint, of the old unbound format (v1), or fails
 * authentication (altered, or sealed for another namespace, key id, kind or change). Nothing was imported.
 */
export class EnvelopeInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_ENVELOPE_INVALID';
  static override readonly defaultHint =
    "The sender sealed it to another transport key (rotated?) or it was altered; the stream falls back to a snapshot of the namespace.";
}

/** The transport key id names a key of the wrong type or mechanisms in the NetHSM; it is never replaced silently. */
export class TransportKeyInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_TRANSPORT_KEY_INVALID';
  static override readonly defaultHint =
    'Delete or rename that root key on the NetHSM (docs/key-material.md), or configure another transport key id; the daemon then creates it.';
}

/** A stream change that does not follow the replica's position (gap, other epoch): refused, nothing applied. */
export class StreamOutOfOrderError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_OUT_OF_ORDER';
  static override readonly defaultHint = 'Nothing to do: the replica reconnects from its stored position, or takes a snapshot when the primary no longer has it.';
}

/**
 * A stream line from another change log than the replica's position is in (the primary's log was reset: its state was
 * lost or replaced, or it sends no log id): the position means nothing there; refused, nothing applied; the replica
 * takes a snapshot.
 */
export class StreamLogChangedError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_LOG_CHANGED';
  static override readonly defaultHint =
    "Nothing to do: the replica takes a snapshot from the primary's current change log and streams from there. If it recurs, check whether the primary's state directory is being lost or replaced.";
}

/** A stream change the replica's NetHSM refused (not a transient failure): nothing recorded; the replica takes a snapshot. */
export class StreamApplyFailedError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_APPLY_FAILED';
  static override readonly defaultHint = "Check the replication account's role in the namespace on this NetHSM; the daemon falls back to a snapshot of the namespace.";
}

/**
 * The change log cannot re-apply a namespace's changes from a seq on (log-replay.ts): a catch-up among them, an import
 * without an envelope sealed to this site, a sequence whose replay could not tell which copy of a key the device holds,
 * or changes no longer retained. Nothing was applied; the merge-restore merges again instead.
 */
export class StreamReplayRefusedError extends NhrError {
  static override readonly code = 'NHR_ERR_STREAM_REPLAY_REFUSED';
  static override readonly defaultHint = 'Nothing to do: the sync merges again (or takes the held sequence) instead of re-applying from the change log.';
}

/** A replicated `POST /keys/generate` body the NetHSM would refuse; `status` and `message` are the NetHSM's answer. */
export class GenerateRequestInvalidError extends NhrError {
  static override readonly code = 'NHR_ERR_KEYGEN_REQUEST_INVALID';
  static override readonly defaultHint = 'Fix the request body as the message says (KeyGenerateRequestData in the NetHSM API).';
  readonly status: number;

  constructor(status: number, message: string, options: NhrErrorOptions = {}) {
    super(message, options);
    this.status = status;
  }
}

// ---------------------------------------------------------------------------------------------

/** Every registered error class; docs/errors.md must list each code (checked by a test). */
export const ERROR_CLASSES: readonly (typeof NhrError)[] = [
  InternalError,
  InputInvalidError,
  PassphraseSourceError,
  OutputExistsError,
  ConfigInvalidError,
  ConfigSecretError,
  NetHsmHttpError as unknown as typeof NhrError,
  NetHsmCredentialRefusedError as unknown as typeof NhrError,
  NetHsmUnreachableError,
  NetHsmTimeoutError,
  NetHsmLockedError,
  NetHsmNotOperationalError,
  TlsPinMismatchError,
  NetHsmTlsUntrustedError,
  NetHsmResponseInvalidError,
  BackupNotABackupError,
  BackupUnsupportedVersionError,
  BackupWrongPassphraseError,
  BackupCorruptedError as unknown as typeof NhrError,
  BackupTruncatedError as unknown as typeof NhrError,
  BackupNamespaceNotFoundError,
  BackupKeyNotFoundError,
  BackupKindMismatchError,
  BackupManifestInvalidError,
  BackupOutOfOrderError,
  InitReplicaRefusedError,
  InitReplicaFailedError,
  AdminUnavailableError,
  AdminRemoteError as unknown as typeof NhrError,
  PeerUnreachableError,
  PeerIdentityError,
  PeerMessageInvalidError,
  PeerRefusedError as unknown as typeof NhrError,
  SyncNamespaceExistsError,
  SyncPausedError,
  SyncFenceExportPendingError,
  SyncBusyError,
  SyncDaemonStoppingError,
  DaemonStoppingError,
  SyncRaceError,
  SyncVerifyFailedError,
  SyncQuarantineFailedError,
  QuarantineFileUnknownError,
  SyncStaleSnapshotError,
  SyncSourceReplayingError,
  AntiEntropySourceReplayingError,
  AntiEntropyPrimaryTooOldError,
  StateOpenFailedError,
  StateDirUnusableError,
  StateLockedError,
  StateSyncFailedError,
  StateWriteFailedError,
  StateMigrationFailedError,
  NamespaceUnknownError,
  RolePromoteRefusedError as unknown as typeof NhrError,
  PeerStaleEpochError,
  RoleNotPrimaryError,
  RoleHandoverFailedError,
  RoleAdminsNotRestoredError,
  RoleAdminsSourceMissingError,
  RoleSplitBrainError,
  RoleStateChangedError,
  FailoverEtcdUnreachableError,
  FailoverLeaderHeldError,
  GatewayReadOnlyError,
  GatewayCallRefusedError,
  GatewayRequestInvalidError,
  GatewayHoldTimeoutError,
  GatewayReplayPendingError,
  GatewayAdminsPendingError,
  GatewayLocalDownError,
  GatewayNoPeerError,
  GatewayDrainTimeoutError,
  GatewayCaptureFailedError,
  FenceTokenStaleError,
  GatewayBodyTooLargeError,
  GatewayBodyTimeoutError,
  EnvelopeInvalidError,
  TransportKeyInvalidError,
  StreamOutOfOrderError,
  StreamLogChangedError,
  StreamApplyFailedError,
  StreamReplayRefusedError,
  GenerateRequestInvalidError as unknown as typeof NhrError,
];

/**
 * `err` in one line for a record an operator reads (status's last error, a state row): `CODE: message` for NhrErrors,
 * the message otherwise. Messages carry no secrets (the registry's rule), so neither does this.
 */
export function describeError(err: unknown): string {
  return err instanceof NhrError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
}

/**
 * Whether an action that failed with `err` may succeed when retried later.
 * NhrErrors answer for themselves; low-level network errors (ECONNREFUSED, ECONNRESET, …) are retryable;
 * anything else is not.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof NhrError) return err.retryable;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RETRYABLE_SYSTEM_CODES.has(code);
}

const RETRYABLE_SYSTEM_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);
