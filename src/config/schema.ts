/**
 * The zod schema of the config file, and the validated, defaulted shape the daemon reads ({@link ReplicatorConfig}).
 * Durations become milliseconds (`…Ms`), listen addresses `{ host, port }`, relative paths absolute, secrets
 * {@link SecretRef}s. Cross-field rules (unique names, known sites, listener clashes) live in `cross-check.ts`.
 */
import path from 'node:path';
import { validate as validateCron } from 'node-cron';
import { z } from 'zod';
import { isValidId, isValidUserId, namespaceOfUser } from '../nethsm/ids.js';
import { normaliseFingerprint } from '../tls/fingerprint.js';
import { tryParseDuration } from './duration.js';
import { parseListenAddress, type ListenAddress } from './listen.js';
import { inlineSecret, type AccountRef, type SecretRef } from './secret-ref.js';

export const DEFAULT_CONFIG_PATH = '/etc/nethsm-replicator/config.yaml';
export const DEFAULT_STATE_DIR = '/var/lib/nethsm-replicator';
export const DEFAULT_HEALTH_LISTEN = '127.0.0.1:9810';
export const DEFAULT_RETRY_INTERVAL = '60s';
/** Anti-entropy once an hour, at minute 23 (away from the top of the hour, where schedules cluster). */
export const DEFAULT_ANTI_ENTROPY_SCHEDULE = '23 * * * *';
/**
 * Device requests per second anti-entropy makes at this site (its own pass, and the inventory it serves replicas):
 * two per key, so 100k keys take ~17 minutes at 200/s. The floor keeps a range of 1024 keys under the peer API's
 * 5-minute idle limit (2048 requests at 10/s: ~3.4 minutes).
 */
export const DEFAULT_ANTI_ENTROPY_RATE = 200;
export const MIN_ANTI_ENTROPY_RATE = 10;
/** Every key's certificate is read from the device at least once per this many anti-entropy reads (docs/anti-entropy.md). */
export const DEFAULT_CERT_SCRUB_PASSES = 8;
export const MAX_CERT_SCRUB_PASSES = 1000;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/**
 * Stream defaults: 7 days or 1,000,000 changes per namespace, a heartbeat every 5 s; a catch-up gathers changes for
 * 2 s or until 1,000 wait, and at most one starts per 30 s (each is a merge-restore of the replica's whole NetHSM).
 */
export const DEFAULT_STREAM = {
  retention: { maxAgeMs: 7 * 86_400_000, maxChanges: 1_000_000 },
  heartbeatIntervalMs: 5_000,
  catchupDebounceMs: 2_000,
  catchupWindowMs: 30_000,
  catchupMaxChanges: 1_000,
} as const;
/**
 * Gateway bounds on slow or oversized clients: a write body of at most 1 MiB (the NetHSM's own limit) arriving within
 * 30 s, any request within 5 min (a 67 MiB sign body), a TLS handshake within 10 s. The same as the gateway's own
 * defaults (GATEWAY_LIMIT_DEFAULTS in src/gateway/server.ts; a test keeps them equal).
 */
export const DEFAULT_GATEWAY_LIMITS = {
  maxWriteBodyBytes: 1024 * 1024,
  writeBodyTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
  handshakeTimeoutMs: 10_000,
} as const;
/**
 * Default of gateway.nethsmConnections: the gateway's connections to the site's NetHSM (requests in flight there).
 * Equal to DEFAULT_UPSTREAM_CONNECTIONS in src/gateway/upstream.ts (a test keeps them equal), which says why.
 */
export const DEFAULT_GATEWAY_NETHSM_CONNECTIONS = 64;
/** Defaults of gateway.remoteServing (docs/configuration.md): 30 s of lag, 3 healthy checks to come back, views cached 2 s. */
export const DEFAULT_REMOTE_SERVING = { maxLagMs: 30_000, recoverAfter: 3, viewTtlMs: 2_000 } as const;

/** Upper bound for gateway.nethsmConnections: each is a TLS session the appliance keeps. */
export const MAX_GATEWAY_NETHSM_CONNECTIONS = 1024;
/** Connections per pool to the NetHSM (`nethsm.connections`): default and upper bound. */
export const DEFAULT_NETHSM_CONNECTIONS = 32;
export const MAX_NETHSM_CONNECTIONS = 256;

/** Upper bound for gateway.maxWriteBodyBytes: every such body is held in memory while it is read. */
export const MAX_WRITE_BODY_BYTES = 1024 * 1024 * 1024;
/** Linux `sun_path` holds 108 bytes including the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX = 107;

export type LogLevel = (typeof LOG_LEVELS)[number];
/** `replication.afterPrimaryRestart`: how a replica resumes from a primary whose daemon restarted (see ReplicatorConfig). */
export const AFTER_PRIMARY_RESTART = ['stream', 'snapshot'] as const;
export type AfterPrimaryRestart = (typeof AFTER_PRIMARY_RESTART)[number];
/** How the daemon trusts its NetHSM's certificate: exactly one way. */
export type NetHsmTrust = { caFile: string } | { fingerprint256: string } | { insecure: true };
/**
 * A peer daemon. Mutual TLS: its certificate must be issued by the group CA (`tls.caFile`) with CN = `name`, and, when
 * `fingerprint256` is set, be exactly that certificate (pin). Matches `src/peer/identity.ts`.
 */
export interface PeerConfig {
  readonly name: string;
  readonly url: string;
  readonly fingerprint256?: string;
  /** The peer's gateway (`https://host:port`), for forwarding replica writes to it. */
  readonly gatewayUrl?: string;
}

export interface NamespaceConfig {
  readonly name: string;
  /** The site that is primary when no epoch has been recorded yet (epoch 1). */
  readonly primary: string;
  /** Cron expression for scheduled snapshots (node-cron syntax, 5 or 6 fields). */
  readonly schedule: string;
  readonly maxLagForPromoteMs: number;
  /** The namespace Administrator (`<ns>~<id>`) the daemon keeps on replicas. */
  readonly replicationUser: AccountRef;
  /** `replicated`: the gateway generates keys in the daemon and streams them (streaming issue). */
  readonly generate: 'device' | 'replicated';
  /**
   * `manual` (default): only the operator's promote moves the primary. `automatic`: the primary holds a lease-backed
   * leader key in etcd (`etcd`), and a fresh replica takes it over when the lease expires (docs/failover.md).
   */
  readonly failover: 'manual' | 'automatic';
}

/** Defaults of the `etcd` section: a 10 s lease, writes stop 3 s before it could expire. */
export const DEFAULT_ETCD = { prefix: '/nethsm-replicator', leaseTtlMs: 10_000, safetyMarginMs: 3_000 } as const;

/**
 * The etcd cluster automatic failover uses (one member per site plus a witness). `leaseTtlMs`: the leader key's
 * lease (whole seconds, as etcd grants them); `safetyMarginMs`: a primary that has not renewed its lease stops taking
 * writes this long before the lease could expire. `tls`: the cluster's CA and, for client-certificate auth, this
 * site's client certificate and key.
 */
export interface EtcdConfig {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly leaseTtlMs: number;
  readonly safetyMarginMs: number;
  readonly tls?: { readonly caFile: string; readonly certFile?: string; readonly keyFile?: string };
}

export interface ReplicatorConfig {
  readonly site: string;
  readonly insecureInline: boolean;
  readonly nethsm: {
    readonly url: string;
    readonly tls: NetHsmTrust;
    /**
     * Keep-alive connections per pool to the NetHSM: the daemon's own (replication; bounds the stream's adaptive apply
     * window) and the gateway's (applications' requests).
     */
    readonly connections: number;
    readonly credentials: {
      /** Root Backup user: takes device backups. */
      readonly backup: AccountRef;
      /** Root Administrator: restores. */
      readonly admin: AccountRef;
      /** Root Metrics user: re-exports the NetHSM's metrics. */
      readonly metrics?: AccountRef;
      /** Root Operator: unwraps streamed key material with the site's transport key (decrypt); needed for streaming. */
      readonly operator?: AccountRef;
    };
  };
  readonly peers: readonly PeerConfig[];
  readonly tls: { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
  readonly peerApi: { readonly listen: ListenAddress };
  readonly admin: { readonly socket: string };
  /** `tls`: serve health and metrics over HTTPS (when the scrape crosses an untrusted network). */
  readonly health: { readonly listen: ListenAddress; readonly tls?: { readonly certFile: string; readonly keyFile: string } };
  /**
   * The NetHSM-compatible gateway applications use in place of the NetHSM. `maxHoldMs`: how long a write waits while
   * a restore runs (then 503 + Retry-After); `drainTimeoutMs`: how long a restore waits for writes in flight;
   * `forwardToPrimary`: forward writes for a replica namespace to its primary's gateway (`peers[].gatewayUrl`)
   * instead of refusing them. Slow clients: a write's body (read whole before it waits for a restore) is at most
   * `maxWriteBodyBytes` and arrives within `writeBodyTimeoutMs`; any request within `requestTimeoutMs`; a TLS handshake
   * within `handshakeTimeoutMs`. `nethsmConnections`: the most requests the gateway has in flight at the NetHSM.
   */
  readonly gateway?: {
    readonly listen: ListenAddress;
    readonly certFile: string;
    readonly keyFile: string;
    readonly maxHoldMs: number;
    readonly drainTimeoutMs: number;
    readonly forwardToPrimary: boolean;
    readonly maxWriteBodyBytes: number;
    readonly writeBodyTimeoutMs: number;
    readonly requestTimeoutMs: number;
    readonly handshakeTimeoutMs: number;
    readonly nethsmConnections: number;
    /**
     * Cross-site serving (docs/gateway.md, "Serving from a peer"); absent: off. While this site's NetHSM is down, reads
     * and crypto go to a peer's gateway holding the namespace as primary or as a replica at most `maxLagMs` behind;
     * serving returns here after `recoverAfter` healthy checks in a row; peers' serving views are cached `viewTtlMs`.
     */
    readonly remoteServing?: { readonly maxLagMs: number; readonly recoverAfter: number; readonly viewTtlMs: number };
    /** Which peer serves when the local NetHSM is down (src/gateway/remote-serving.ts). */
    readonly routing: 'local-first' | 'nearest-healthy';
  };
  readonly stateDir: string;
  /**
   * `directWriters`: clients write to this site's NetHSM around the daemon (not through its gateway). Then every
   * snapshot sync merges inside its exclusive hold and re-checks the device before restoring (writes wait for backup,
   * merge and restore), because the device barrier cannot see such writes (docs/concurrency.md).
   * `afterPrimaryRestart`: what a replica does when a primary's daemon answers again after a restart while it counted
   * as down: `stream` resumes the stream (every acknowledged change is in the primary's change log) and queues an
   * anti-entropy pass of each namespace it is primary of, which finds writes made around its daemon meanwhile;
   * `snapshot` takes a full snapshot sync of each (a device backup at both sites and a restore here, writes held).
   */
  readonly replication: {
    readonly passphrase: SecretRef;
    readonly backupPassphrase: SecretRef;
    readonly directWriters: boolean;
    readonly afterPrimaryRestart: AfterPrimaryRestart;
  };
  readonly namespaces: readonly NamespaceConfig[];
  /** `maxAttempts` is `Infinity` for unlimited (the default), as `MemberMonitor` takes it. */
  readonly recovery: { readonly retryIntervalMs: number; readonly maxAttempts: number };
  /**
   * Streaming replication: how long the change log keeps changes (by age and by count per namespace; a replica whose
   * position is older takes a snapshot), how often an idle stream sends a heartbeat, and how long a replica gathers
   * catch-up requests (HSM-generated keys, user changes) before it takes one snapshot for all of them.
   */
  readonly stream: {
    readonly retention: { readonly maxAgeMs: number; readonly maxChanges: number };
    readonly heartbeatIntervalMs: number;
    readonly catchupDebounceMs: number;
    /** At most one catch-up snapshot starts per this many ms (src/stream/catchup-batch.ts). */
    readonly catchupWindowMs: number;
    /** A pending catch-up runs once this many changes wait, without gathering for `catchupDebounceMs`. */
    readonly catchupMaxChanges: number;
  };
  readonly logging: { readonly level: LogLevel };
  /** Anti-entropy passes at replicas: compare inventories with the primary, repair via the API, snapshot the rest. */
  readonly antiEntropy: {
    readonly schedule: string;
    /** Device requests per second of anti-entropy at this site (passes and the inventory served to replicas). */
    readonly maxRequestsPerSecond: number;
    /**
     * A read of a namespace takes a key's certificate from the certificate table unless the key is in its scrub slice:
     * 1/certScrubPasses of the keys, rotating, so a certificate changed straight at the NetHSM is found within this many
     * reads. 1: every read reads every certificate (two requests per key).
     */
    readonly certScrubPasses: number;
  };
  /** Needed by namespaces with `failover: automatic`; absent: every namespace fails over manually. */
  readonly etcd?: EtcdConfig;
}

export interface SchemaOptions {
  /** Accept plain strings where a secret is expected (top-level `insecureInline: true`). */
  allowInline: boolean;
  /** Directory relative paths are resolved against (the config file's); absent: relative paths are refused. */
  baseDir: string | undefined;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function secretRef(opts: SchemaOptions) {
  return z.unknown().transform((v, ctx): SecretRef => {
    const fail = (message: string, at: string[] = []): never => {
      ctx.addIssue({ code: 'custom', message, path: at });
      return z.NEVER;
    };
    if (v === undefined || v === null) return fail('is required');
    if (typeof v === 'string') {
      if (opts.allowInline && v !== '') return inlineSecret(v);
      return fail(
        'must be a secret reference ({ file: <path> } or { env: <NAME> }), not an inline value' +
          (opts.allowInline ? '' : ' (inline secrets need the top-level insecureInline: true, for demos and tests only)'),
      );
    }
    if (typeof v !== 'object' || Array.isArray(v)) return fail('must be { file: <path> } or { env: <NAME> }');
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length !== 1 || (keys[0] !== 'file' && keys[0] !== 'env')) {
      return fail('must have exactly one of file or env');
    }
    if (keys[0] === 'env') {
      if (typeof o.env !== 'string' || !ENV_NAME.test(o.env)) return fail('must be an environment variable name', ['env']);
      return { kind: 'env', name: o.env };
    }
    const p = typeof o.file === 'string' ? resolvePath(o.file, opts) : undefined;
    if (p === undefined) return fail(`must be ${opts.baseDir ? 'a path' : 'an absolute path'}`, ['file']);
    return { kind: 'file', path: p };
  });
}

function resolvePath(p: string, opts: SchemaOptions): string | undefined {
  if (p === '' || p.includes('\0')) return undefined;
  if (path.isAbsolute(p)) return path.normalize(p);
  return opts.baseDir === undefined ? undefined : path.resolve(opts.baseDir, p);
}

function filePath(opts: SchemaOptions) {
  return z.string().transform((p, ctx) => {
    const out = resolvePath(p, opts);
    if (out === undefined) {
      ctx.addIssue({ code: 'custom', message: opts.baseDir ? 'must be a path' : 'must be an absolute path' });
      return z.NEVER;
    }
    return out;
  });
}

/** Parses `v` as a URL with no credentials in it (an inline secret; the value is not echoed), or adds the issue. */
function credentialFreeUrl(v: string, ctx: z.RefinementCtx): URL | undefined {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a URL` });
    return undefined;
  }
  if (u.username === '' && u.password === '') return u;
  ctx.addIssue({ code: 'custom', message: 'must not carry credentials' });
  return undefined;
}

function httpsUrl() {
  return z.string().superRefine((v, ctx) => {
    const u = credentialFreeUrl(v, ctx);
    if (!u) return;
    if (u.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: `"${v}" must be an https:// URL` });
    else if (u.search !== '' || u.hash !== '') ctx.addIssue({ code: 'custom', message: `"${v}" must not have a query or fragment` });
  });
}

const fingerprint = z.string().transform((v, ctx) => {
  const normal = normaliseFingerprint(v);
  if (normal === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a SHA-256 fingerprint (32 hex bytes, e.g. AB:CD:…)` });
    return z.NEVER;
  }
  return normal;
});

function cronExpression() {
  return z.string().superRefine((v, ctx) => {
    if (!validateCron(v)) ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid cron expression` });
  });
}

function duration(what: string) {
  return z.unknown().transform((v, ctx) => {
    if (typeof v !== 'string') {
      const message =
        v === undefined
          ? 'is required'
          : typeof v === 'number'
            ? `is a number without a unit: write it with one, e.g. "${v}s" or "${v}m" (units: ms, s, m, h)`
            : 'must be a duration such as 1500ms, 30s, 5m or 1h';
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    }
    const ms = tryParseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (e.g. 1500ms, 30s, 5m, 1h)` });
      return z.NEVER;
    }
    if (ms <= 0 && what === 'positive') {
      ctx.addIssue({ code: 'custom', message: 'must be longer than 0' });
      return z.NEVER;
    }
    return ms;
  });
}

const listen = z.string().transform((v, ctx) => {
  const a = parseListenAddress(v);
  if (a === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a listen address (host:port or [v6]:port)` });
    return z.NEVER;
  }
  return a;
});

const idString = (what: string) =>
  z.string().superRefine((v, ctx) => {
    if (!isValidId(v)) ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid ${what} (letters, digits, then _ . - ; at most 128)` });
  });

function account(opts: SchemaOptions, scope: 'root' | 'namespace') {
  return z.strictObject({
    user: z.string().superRefine((v, ctx) => {
      if (!isValidUserId(v)) ctx.addIssue({ code: 'custom', message: `"${v}" is not a valid NetHSM user id` });
      else if (scope === 'root' && namespaceOfUser(v) !== undefined) {
        ctx.addIssue({ code: 'custom', message: `"${v}" must be a root user (no namespace~ prefix)` });
      } else if (scope === 'namespace' && namespaceOfUser(v) === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${v}" must be a namespace user (<namespace>~<id>)` });
      }
    }),
    passphrase: secretRef(opts),
  });
}

function netHsmTrust(opts: SchemaOptions) {
  return z
    .strictObject({ caFile: filePath(opts).optional(), fingerprint256: fingerprint.optional(), insecure: z.literal(true).optional() })
    .transform((t, ctx): NetHsmTrust => {
      const set = [t.caFile !== undefined, t.fingerprint256 !== undefined, t.insecure !== undefined].filter(Boolean).length;
      if (set !== 1) {
        ctx.addIssue({ code: 'custom', message: 'must have exactly one of caFile, fingerprint256 or insecure: true' });
        return z.NEVER;
      }
      if (t.caFile !== undefined) return { caFile: t.caFile };
      if (t.fingerprint256 !== undefined) return { fingerprint256: t.fingerprint256 };
      return { insecure: true };
    });
}

/** An etcd client URL: http(s)://host:port, nothing else (no credentials, path, query). */
function etcdUrl() {
  return z.string().superRefine((v, ctx) => {
    const u = credentialFreeUrl(v, ctx);
    if (!u) return;
    if (u.protocol !== 'https:' && u.protocol !== 'http:') ctx.addIssue({ code: 'custom', message: `"${v}" must be an https:// (or, on loopback, http://) URL` });
    else if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '') ctx.addIssue({ code: 'custom', message: `"${v}" must be scheme://host:port only` });
    else if (u.port === '') ctx.addIssue({ code: 'custom', message: `"${v}" must name the port (etcd's client port is usually 2379)` });
  });
}

/** A whole number ≥ 1, written as a number or a string of digits; anything else "must be a whole number". */
const positiveInt = z
  .custom<number | string>((v) => typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v)), { message: 'must be a whole number' })
  .transform(Number)
  .pipe(z.number().int().min(1));

/** The schema for one set of options; parse with `safeParse` and report every issue. */
export function buildConfigSchema(opts: SchemaOptions) {
  const namespace = z.strictObject({
    name: idString('namespace name'),
    primary: idString('site name'),
    schedule: cronExpression(),
    maxLagForPromote: duration('any'),
    replicationUser: account(opts, 'namespace'),
    generate: z.enum(['device', 'replicated']).default('device'),
    failover: z.enum(['manual', 'automatic']).default('manual'),
  });

  const etcd = z.strictObject({
    endpoints: z.array(etcdUrl()).min(1, 'must list at least one etcd member'),
    prefix: z
      .string()
      .regex(/^\/[A-Za-z0-9_./-]*[A-Za-z0-9_.-]$/, 'must start with / and hold only letters, digits, _ . - and /, not ending in /')
      .default(DEFAULT_ETCD.prefix),
    leaseTtl: duration('positive').default(DEFAULT_ETCD.leaseTtlMs),
    safetyMargin: duration('positive').default(DEFAULT_ETCD.safetyMarginMs),
    tls: z.strictObject({ caFile: filePath(opts), certFile: filePath(opts).optional(), keyFile: filePath(opts).optional() }).optional(),
  });

  return z
    .strictObject({
      site: idString('site name'),
      insecureInline: z.boolean().default(false),
      nethsm: z.strictObject({
        url: httpsUrl(),
        tls: netHsmTrust(opts),
        connections: positiveInt.pipe(z.number().max(MAX_NETHSM_CONNECTIONS)).default(DEFAULT_NETHSM_CONNECTIONS),
        credentials: z.strictObject({
          backup: account(opts, 'root'),
          admin: account(opts, 'root'),
          metrics: account(opts, 'root').optional(),
          operator: account(opts, 'root').optional(),
        }),
      }),
      peers: z
        .array(
          z.strictObject({
            name: idString('site name'),
            url: httpsUrl(),
            tls: z.strictObject({ fingerprint256: fingerprint.optional() }).optional(),
            gatewayUrl: httpsUrl().optional(),
          }),
        )
        .default([]),
      tls: z.strictObject({ certFile: filePath(opts), keyFile: filePath(opts), caFile: filePath(opts) }),
      peerApi: z.strictObject({ listen }),
      admin: z.strictObject({ socket: filePath(opts).optional() }).default({}),
      health: z
        .strictObject({
          listen: listen.default(parseListenAddress(DEFAULT_HEALTH_LISTEN)!),
          tls: z.strictObject({ certFile: filePath(opts), keyFile: filePath(opts) }).optional(),
        })
        .default({
        listen: parseListenAddress(DEFAULT_HEALTH_LISTEN)!,
      }),
      gateway: z
        .strictObject({
          listen,
          certFile: filePath(opts),
          keyFile: filePath(opts),
          maxHold: duration('positive').default(30_000),
          drainTimeout: duration('positive').default(60_000),
          forwardToPrimary: z.boolean().default(false),
          maxWriteBodyBytes: positiveInt.pipe(z.number().max(MAX_WRITE_BODY_BYTES)).default(DEFAULT_GATEWAY_LIMITS.maxWriteBodyBytes),
          writeBodyTimeout: duration('positive').default(DEFAULT_GATEWAY_LIMITS.writeBodyTimeoutMs),
          requestTimeout: duration('positive').default(DEFAULT_GATEWAY_LIMITS.requestTimeoutMs),
          handshakeTimeout: duration('positive').default(DEFAULT_GATEWAY_LIMITS.handshakeTimeoutMs),
          nethsmConnections: positiveInt.pipe(z.number().max(MAX_GATEWAY_NETHSM_CONNECTIONS)).default(DEFAULT_GATEWAY_NETHSM_CONNECTIONS),
          remoteServing: z
            .strictObject({
              maxLag: duration('any').default(DEFAULT_REMOTE_SERVING.maxLagMs),
              recoverAfter: positiveInt.pipe(z.number().max(100)).default(DEFAULT_REMOTE_SERVING.recoverAfter),
              viewTtl: duration('positive').default(DEFAULT_REMOTE_SERVING.viewTtlMs),
            })
            .optional(),
          routing: z.enum(['local-first', 'nearest-healthy']).default('local-first'),
        })
        .optional(),
      stateDir: filePath(opts).default(DEFAULT_STATE_DIR),
      replication: z.strictObject({
        passphrase: secretRef(opts),
        backupPassphrase: secretRef(opts),
        directWriters: z.boolean().default(false),
        afterPrimaryRestart: z.enum(AFTER_PRIMARY_RESTART).default('stream'),
      }),
      namespaces: z.array(namespace).default([]),
      recovery: z
        .strictObject({
          retryInterval: duration('positive').default(60_000),
          maxAttempts: z.union([z.literal('unlimited'), positiveInt]).default('unlimited'),
        })
        .default({ retryInterval: 60_000, maxAttempts: 'unlimited' }),
      stream: z
        .strictObject({
          retention: z
            .strictObject({ maxAge: duration('positive').default(DEFAULT_STREAM.retention.maxAgeMs), maxChanges: positiveInt.default(DEFAULT_STREAM.retention.maxChanges) })
            .default({ maxAge: DEFAULT_STREAM.retention.maxAgeMs, maxChanges: DEFAULT_STREAM.retention.maxChanges }),
          heartbeatInterval: duration('positive').default(DEFAULT_STREAM.heartbeatIntervalMs),
          catchupDebounce: duration('any').default(DEFAULT_STREAM.catchupDebounceMs),
          catchupWindow: duration('any').default(DEFAULT_STREAM.catchupWindowMs),
          catchupMaxChanges: positiveInt.default(DEFAULT_STREAM.catchupMaxChanges),
        })
        .default({
          retention: { maxAge: DEFAULT_STREAM.retention.maxAgeMs, maxChanges: DEFAULT_STREAM.retention.maxChanges },
          heartbeatInterval: DEFAULT_STREAM.heartbeatIntervalMs,
          catchupDebounce: DEFAULT_STREAM.catchupDebounceMs,
          catchupWindow: DEFAULT_STREAM.catchupWindowMs,
          catchupMaxChanges: DEFAULT_STREAM.catchupMaxChanges,
        }),
      logging: z.strictObject({ level: z.enum(LOG_LEVELS).default('info') }).default({ level: 'info' }),
      antiEntropy: z
        .strictObject({
          schedule: cronExpression().default(DEFAULT_ANTI_ENTROPY_SCHEDULE),
          maxRequestsPerSecond: positiveInt
            .pipe(z.number().min(MIN_ANTI_ENTROPY_RATE, `must be at least ${MIN_ANTI_ENTROPY_RATE}`))
            .default(DEFAULT_ANTI_ENTROPY_RATE),
          certScrubPasses: positiveInt
            .pipe(z.number().max(MAX_CERT_SCRUB_PASSES, `must be at most ${MAX_CERT_SCRUB_PASSES}`))
            .default(DEFAULT_CERT_SCRUB_PASSES),
        })
        .default({ schedule: DEFAULT_ANTI_ENTROPY_SCHEDULE, maxRequestsPerSecond: DEFAULT_ANTI_ENTROPY_RATE, certScrubPasses: DEFAULT_CERT_SCRUB_PASSES }),
      etcd: etcd.optional(),
    })
    .transform((c): ReplicatorConfig => {
      const { maxAttempts, retryInterval } = c.recovery;
      return {
        site: c.site,
        insecureInline: c.insecureInline,
        nethsm: c.nethsm,
        peers: c.peers.map((p) => ({
          name: p.name,
          url: p.url,
          ...(p.tls?.fingerprint256 ? { fingerprint256: p.tls.fingerprint256 } : {}),
          ...(p.gatewayUrl ? { gatewayUrl: p.gatewayUrl } : {}),
        })),
        tls: c.tls,
        peerApi: c.peerApi,
        admin: { socket: c.admin.socket ?? path.join(c.stateDir, 'admin.sock') },
        health: c.health,
        ...(c.gateway
          ? {
              gateway: {
                listen: c.gateway.listen,
                certFile: c.gateway.certFile,
                keyFile: c.gateway.keyFile,
                maxHoldMs: c.gateway.maxHold,
                drainTimeoutMs: c.gateway.drainTimeout,
                forwardToPrimary: c.gateway.forwardToPrimary,
                maxWriteBodyBytes: c.gateway.maxWriteBodyBytes,
                writeBodyTimeoutMs: c.gateway.writeBodyTimeout,
                requestTimeoutMs: c.gateway.requestTimeout,
                handshakeTimeoutMs: c.gateway.handshakeTimeout,
                nethsmConnections: c.gateway.nethsmConnections,
                routing: c.gateway.routing,
                ...(c.gateway.remoteServing
                  ? {
                      remoteServing: {
                        maxLagMs: c.gateway.remoteServing.maxLag,
                        recoverAfter: c.gateway.remoteServing.recoverAfter,
                        viewTtlMs: c.gateway.remoteServing.viewTtl,
                      },
                    }
                  : {}),
              },
            }
          : {}),
        stateDir: c.stateDir,
        replication: c.replication,
        namespaces: c.namespaces.map(({ maxLagForPromote, ...ns }) => ({ ...ns, maxLagForPromoteMs: maxLagForPromote })),
        recovery: { retryIntervalMs: retryInterval, maxAttempts: maxAttempts === 'unlimited' ? Number.POSITIVE_INFINITY : maxAttempts },
        stream: {
          retention: { maxAgeMs: c.stream.retention.maxAge, maxChanges: c.stream.retention.maxChanges },
          heartbeatIntervalMs: c.stream.heartbeatInterval,
          catchupDebounceMs: c.stream.catchupDebounce,
          catchupWindowMs: c.stream.catchupWindow,
          catchupMaxChanges: c.stream.catchupMaxChanges,
        },
        logging: c.logging,
        antiEntropy: c.antiEntropy,
        ...(c.etcd
          ? {
              etcd: {
                endpoints: c.etcd.endpoints,
                prefix: c.etcd.prefix,
                leaseTtlMs: c.etcd.leaseTtl,
                safetyMarginMs: c.etcd.safetyMargin,
                ...(c.etcd.tls ? { tls: c.etcd.tls } : {}),
              },
            }
          : {}),
      };
    });
}
