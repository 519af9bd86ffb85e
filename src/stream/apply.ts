/**
 * Applying one stream change at a replica, idempotently: a change at or below the position is skipped (`duplicate`); a change
 * whose effect is already on the device is recorded as `present`; otherwise the effect is made through the API with the
 * namespace's replication account and recorded as `applied`. The record and the new position are written in one SQLite
 * transaction after the device answered, so a crash between the two repeats the change, which then finds its effect
 * present. Imports are opened from their envelope through this site's transport key (the NetHSM unwraps); the
 * plaintext is zeroed once sent. A change that cannot be carried out through the API here (a key the replica lacks, a
 * catch-up) returns `catchup` without recording anything: the caller takes a snapshot, whose position covers it.
 *
 * Refusals (nothing applied, nothing recorded): another epoch or primary than the replica holds (PeerStaleEpochError),
 * another change log than the position is in (StreamLogChangedError: the primary's log was reset), a gap
 * (StreamOutOfOrderError), an envelope for another site or transport key, or sealed for another namespace, key id,
 * kind or change, or of the old unbound format (EnvelopeInvalidError), a NetHSM refusal that is
 * not about the key's presence (StreamApplyFailedError). Conditions of this site propagate as their cause, for a
 * retry with backoff: a NetHSM that is not Operational (NetHsmNotOperationalError), a refused credential of the
 * replication account or the root Operator (NetHsmCredentialRefusedError), transient NetHSM failures (unchanged).
 */
import { EnvelopeInvalidError, NetHsmCredentialRefusedError, NetHsmHttpError, PeerStaleEpochError, StreamApplyFailedError, StreamLogChangedError, StreamOutOfOrderError } from '../errors.js';
import type { NetHsmClient, PrivateKey } from '../nethsm/client.js';
import { asDeviceFault, replicationAccount } from '../nethsm/device-fault.js';
import type { AppliedOutcome } from '../state/applied-repo.js';
import type { StateStore } from '../state/store.js';
import { openEnvelope } from './envelope.js';
import { envelopeContext, type ChangeLine } from './protocol.js';
import { certKeysOf } from '../namespaces/cert-read.js';

export interface Unwrapper {
  keyId: string;
  fingerprint: string;
  unwrap(wrapped: Buffer): Promise<Buffer>;
}

export interface ApplyDeps {
  /** This site's name (the envelope's addressee). */
  site: string;
  store: StateStore;
  /** The namespace's replication account on this site's NetHSM. */
  client(namespace: string): NetHsmClient;
  /** This site's transport key; undefined when it has none (imports then need a snapshot). */
  transportKey(): Unwrapper | undefined;
}

export type ApplyResult = { outcome: 'duplicate' } | { outcome: Exclude<AppliedOutcome, 'catchup'> } | { outcome: 'catchup'; reason: string };

/** `fence`: see makeEffect (the stream's token check, right before the device). */
export async function applyChange(deps: ApplyDeps, namespace: string, source: string, line: ChangeLine, fence?: () => void): Promise<ApplyResult> {
  if (admitChange(deps, namespace, source, line) === 'duplicate') return { outcome: 'duplicate' };
  const effect = await makeEffect(deps, namespace, line, fence);
  if (effect.outcome === 'catchup') return effect;
  const outcome = effect.outcome;
  // Group commit (one WAL sync shared with the other writes of the turn); the position cannot have moved meanwhile
  // (the caller holds the namespace's lock), and recordNext refuses to write if it did.
  await deps.store.groupCommit(() => recordNext(deps, namespace, source, line, outcome));
  return { outcome };
}

/**
 * The checks of applyChange before any effect: `duplicate` for a change at or below the position, `go` for the next
 * one. `after`: the seq the change must follow when earlier changes are still in flight (ApplyWindow); default the
 * stored position. Throws PeerStaleEpochError, StreamLogChangedError or StreamOutOfOrderError as applyChange does;
 * writes nothing.
 *
 * The position alone decides what is a replay, and only within its change log: (epoch, seq) names a change only in one
 * log, and a primary whose state was lost numbers a new log from 1 again. The applied records never run ahead of the
 * position (a snapshot that moves it back forgets the records after it), so asking them would add nothing but the
 * risk of skipping a real change.
 */
export function admitChange(deps: ApplyDeps, namespace: string, source: string, line: ChangeLine, after?: number): 'duplicate' | 'go' {
  const { store } = deps;
  const row = store.roles.require(namespace);
  const ctx = { namespace, site: source, epoch: row.epoch };
  if (row.role !== 'replica' || row.primarySite !== source) {
    throw new PeerStaleEpochError(`change ${line.epoch}.${line.seq} from ${source} refused: namespace ${namespace} is ${row.role} here with primary ${row.primarySite} at epoch ${row.epoch}`, ctx);
  }
  if (line.epoch !== row.epoch) {
    throw new PeerStaleEpochError(`change ${line.epoch}.${line.seq} from ${source} refused: namespace ${namespace} is at epoch ${row.epoch} here`, ctx);
  }
  const pos = store.positions.get(namespace, source);
  if (pos?.epoch !== undefined && pos.logId !== line.log) {
    throw new StreamLogChangedError(
      `change ${line.epoch}.${line.seq} from ${source} ${inLog(line.log)}; this replica's position ${pos.epoch}.${pos.seq} ${inLog(pos.logId)}: a snapshot is needed`,
      ctx,
    );
  }
  const last = pos?.epoch === line.epoch && pos.seq !== undefined ? Math.max(pos.seq, after ?? pos.seq) : undefined;
  if (last !== undefined && line.seq <= last) return 'duplicate';
  if (last === undefined) {
    throw new StreamOutOfOrderError(`change ${line.epoch}.${line.seq} refused: this replica's position is ${pos?.epoch ?? '-'}.${pos?.seq ?? '-'} (another epoch)`, ctx);
  }
  if (line.seq !== last + 1) {
    throw new StreamOutOfOrderError(`change ${line.epoch}.${line.seq} refused: expected ${line.epoch}.${last + 1} next`, ctx);
  }
  return 'go';
}

/** Records an applied (or found present) change and moves the position to it, in one transaction. */
export function recordChange(deps: ApplyDeps, namespace: string, source: string, line: ChangeLine, outcome: 'applied' | 'present'): void {
  deps.store.applied.record({
    namespace,
    sourceSite: source,
    ...(line.log !== undefined ? { logId: line.log } : {}),
    epoch: line.epoch,
    seq: line.seq,
    kind: line.kind,
    ...('keyId' in line ? { keyId: line.keyId } : {}),
    outcome,
    changedAt: line.at,
  });
}

/**
 * recordChange for a record written after the fact (ApplyWindow's group commit): only when the stored position is
 * still the change just before `line` (same change log and epoch), so a record whose predecessor's record failed never
 * moves the position past it. Otherwise throws StreamOutOfOrderError and writes nothing. Meant to run inside the
 * transaction that writes it, so the check and the write see the same state.
 */
export function recordNext(deps: ApplyDeps, namespace: string, source: string, line: ChangeLine, outcome: 'applied' | 'present'): void {
  const pos = deps.store.positions.get(namespace, source);
  if (pos?.epoch !== line.epoch || pos.seq !== line.seq - 1 || pos.logId !== line.log) {
    throw new StreamOutOfOrderError(`change ${line.epoch}.${line.seq} not recorded: this replica's position is ${pos?.epoch ?? '-'}.${pos?.seq ?? '-'}, not the change before it`, {
      namespace,
      site: source,
      epoch: line.epoch,
    });
  }
  recordChange(deps, namespace, source, line, outcome);
}

function inLog(log: string | undefined): string {
  return log !== undefined ? `is in change log ${log}` : 'names no change log';
}

/** `unwrapMs`: an import's time opening its envelope (the unwrap, a NetHSM decrypt unless cached): for the rewind's trace. */
export type Effect = { outcome: 'applied' | 'present'; unwrapMs?: number } | { outcome: 'catchup'; reason: string };

/**
 * The change's effect on this site's NetHSM (no state written). Throws as applyChange does.
 *
 * `fence` (the stream's fencing token check, assertTokenCurrent) runs right before the first device call, after every
 * wait of this change (its room in the window, the namespace's lock, the certificate table's group commit): a device
 * hold is checked once, when it is taken, and one hold carries many changes, so without this a change admitted under a
 * hold taken before a pause, promote, demote or follow could still start on the device after that committed. A stale
 * token throws FenceTokenStaleError with nothing sent to the device.
 */
export async function makeEffect(deps: ApplyDeps, namespace: string, line: ChangeLine, fence?: () => void): Promise<Effect> {
  if (line.kind === 'catchup') return { outcome: 'catchup', reason: line.reason };
  // The certificate table forgets the key before and after the write, whatever its outcome (key-certs-repo.ts).
  const ids = certKeysOf(line.kind, line.keyId, line.kind === 'key-moved' ? line.newId : undefined);
  await forgetCerts(deps, namespace, ids);
  fence?.();
  try {
    return await effectOf(deps, namespace, line);
  } finally {
    await forgetCerts(deps, namespace, ids);
  }
}

/** Forgets keys in the certificate table; a row is deleted in a group commit, and only a key that has one costs a write. */
async function forgetCerts(deps: ApplyDeps, namespace: string, ids: readonly string[]): Promise<void> {
  const rows = deps.store.keyCerts.forgetInMemory(namespace, ids);
  if (rows.length > 0) await deps.store.groupCommit(() => deps.store.keyCerts.forget(namespace, rows));
}

async function effectOf(deps: ApplyDeps, namespace: string, line: Exclude<ChangeLine, { kind: 'catchup' }>): Promise<Effect> {
  const c = deps.client(namespace);
  const missing = (): Effect => ({ outcome: 'catchup', reason: `key ${line.keyId} is not on this replica` });
  try {
    switch (line.kind) {
      case 'key-imported':
        return await importKey(deps, c, namespace, line);
      case 'key-deleted':
        return (await status(() => c.deleteKey(line.keyId), [404])) === 404 ? { outcome: 'present' } : { outcome: 'applied' };
      case 'key-moved': {
        const s = await status(() => c.moveKey(line.keyId, line.newId), [404, 409]);
        if (s === 'ok') return { outcome: 'applied' };
        const [from, to] = await Promise.all([exists(c, line.keyId), exists(c, line.newId)]);
        return !from && to ? { outcome: 'present' } : { outcome: 'catchup', reason: `move of ${line.keyId} to ${line.newId} does not fit this replica` };
      }
      case 'cert-set': {
        const data = Buffer.from(line.data, 'base64');
        if ((await status(() => c.putCert(line.keyId, data), [404, 409])) === 'ok') return { outcome: 'applied' };
        const have = await c.getCert(line.keyId).catch((err: unknown) => (isStatus(err, 404) ? undefined : Promise.reject(err)));
        if (have === undefined) return missing();
        if (have && have.data.equals(data)) return { outcome: 'present' };
        await c.deleteCert(line.keyId);
        await c.putCert(line.keyId, data);
        return { outcome: 'applied' };
      }
      case 'cert-removed':
        return (await status(() => c.deleteCert(line.keyId), [404])) === 'ok' ? { outcome: 'applied' } : (await exists(c, line.keyId)) ? { outcome: 'present' } : missing();
      case 'tag-added':
        return (await status(() => c.addKeyTag(line.keyId, line.tag), [404])) === 'ok' ? { outcome: 'applied' } : missing();
      case 'tag-removed':
        return (await status(() => c.removeKeyTag(line.keyId, line.tag), [404])) === 'ok' ? { outcome: 'applied' } : (await exists(c, line.keyId)) ? { outcome: 'present' } : missing();
      case 'label-set':
        return (await status(() => c.setKeyLabel(line.keyId, line.label), [404])) === 'ok' ? { outcome: 'applied' } : missing();
      case 'label-removed':
        return (await status(() => c.removeKeyLabel(line.keyId), [404])) === 'ok' ? { outcome: 'applied' } : missing();
    }
  } catch (caught) {
    // Locked (412) and refused credentials (401/403) are conditions of this site, not of the change: nothing a snapshot
    // could fix. They propagate as their cause, and the stream retries the change with backoff.
    const err = asDeviceFault(caught, replicationAccount(namespace, c.username));
    // A refused credential is this site's condition, retried with its cause (not a change to give up on for a snapshot).
    if (err instanceof NetHsmHttpError && !err.retryable && !(err instanceof NetHsmCredentialRefusedError)) {
      throw new StreamApplyFailedError(`change ${line.epoch}.${line.seq} (${line.kind}) refused by this NetHSM: ${err.status} ${err.nethsmMessage ?? ''}`.trim(), {
        namespace,
        cause: err,
        operation: err.operation ?? line.kind,
      });
    }
    throw err;
  }
}

/**
 * Import first, and ask whether the key exists only when the NetHSM refuses: an existence check before every import
 * would cost each import a second round trip, while the key is already there only for replays (a snapshot moved the
 * position back, a crash between effect and record). The outcomes are those of checking first: a key already there is
 * `present` whether or not its envelope opens here (nothing is imported then), and without a transport key only a
 * key already there is accounted for.
 */
async function importKey(deps: ApplyDeps, c: NetHsmClient, namespace: string, line: Extract<ChangeLine, { kind: 'key-imported' }>): Promise<Effect> {
  const tk = deps.transportKey();
  if (!tk) return (await exists(c, line.keyId)) ? { outcome: 'present' } : { outcome: 'catchup', reason: 'this site has no transport key to open imports with' };
  // The envelope opens only for the change it was sealed for: this namespace, this key id, an import, this ref.
  const context = envelopeContext({ namespace, keyId: line.keyId, kind: line.kind, ref: line.ref });
  let plain: Buffer;
  const opening = performance.now();
  try {
    plain = await openEnvelope(line.envelope, { site: deps.site, keyId: tk.keyId, fingerprint: tk.fingerprint }, context, (w) => tk.unwrap(w));
  } catch (err) {
    if (err instanceof EnvelopeInvalidError && (await exists(c, line.keyId))) return { outcome: 'present' };
    throw err;
  }
  let body: PrivateKey;
  try {
    body = JSON.parse(plain.toString('utf8')) as PrivateKey;
  } catch {
    throw new StreamApplyFailedError(`change ${line.epoch}.${line.seq}: the opened import body is not JSON`, { namespace });
  } finally {
    plain.fill(0);
  }
  const unwrapMs = performance.now() - opening;
  const s = await status(() => c.importKey(body, line.keyId), [400, 409]);
  if (s === 'ok') return { outcome: 'applied', unwrapMs };
  // 400 is also "already exists" (the firmware's answer; its API description says 409); any other 400 is the body's fault.
  if (await exists(c, line.keyId)) return { outcome: 'present' };
  throw new StreamApplyFailedError(`change ${line.epoch}.${line.seq}: this NetHSM refused the import of ${line.keyId} (${s})`, { namespace });
}

/** Runs `fn`; `'ok'` on success, the status when the NetHSM answered one of `tolerated`; other errors propagate. */
async function status(fn: () => Promise<unknown>, tolerated: number[]): Promise<'ok' | number> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    if (err instanceof NetHsmHttpError && tolerated.includes(err.status)) return err.status;
    throw err;
  }
}

/** Whether key `keyId` is on the device (404: no; other errors propagate). */
export async function exists(c: NetHsmClient, keyId: string): Promise<boolean> {
  return (await status(() => c.getKey(keyId), [404])) === 'ok';
}

function isStatus(err: unknown, s: number): boolean {
  return err instanceof NetHsmHttpError && err.status === s;
}
