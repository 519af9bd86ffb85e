/**
 * Change capture: the gateway's MutationObserver for namespaces primary here. Before a mutation is forwarded it is
 * recorded as an intent (an import's body already sealed into one envelope per replica site, bound to its namespace,
 * key id, kind and intent id; the plaintext is never stored. `POST /keys` lets the NetHSM pick the id, so its body is
 * sealed when the answer names the id); on the NetHSM's 2xx the intent becomes the namespace's next change, otherwise it is dropped. When the
 * NetHSM's answer is lost (status 0) the device is asked what happened (intent-resolve.ts). Mutations of one key are
 * serialised (KeyLocks), so the log's order is the device's order; the gateway takes those locks before the device barrier
 * (`lockKeys`, then `begin` with the hold), and nothing holding the barrier waits for one (docs/concurrency.md). With `generate: replicated`, `POST /keys/generate`
 * is substituted by a key generated here and imported under the caller's own credentials (`substitute`). While a sync
 * runs at this site (race-replayer.ts `sealOwn`), an import is also sealed to this site's own transport key (`own`),
 * and `end` tells the gateway whether the change log alone can re-apply the change (log-replay.ts).
 */
import { randomUUID } from 'node:crypto';
import { GatewayCaptureFailedError } from '../errors.js';
import type { BeginOptions, KeyHold, MutationEnd, MutationObserver, MutationOutcome, MutationStart, Substitution } from '../gateway/observer.js';
import type { Logger } from '../log.js';
import { isValidId } from '../nethsm/ids.js';
import type { ChangeKind, LoggedChange } from '../state/changelog-repo.js';
import type { Intent } from '../state/intents-repo.js';
import type { StateStore } from '../state/store.js';
import type { Envelope } from './envelope.js';
import { EnvelopeSealer } from './envelope-keys.js';
import { KeyLocks } from './key-locks.js';
import { envelopeContext, MAX_CERT_BYTES, type EnvelopeBinding } from './protocol.js';
import type { Recipients } from './recipients.js';
import { certKeysOf } from '../namespaces/cert-read.js';

/** What a mutation will log: its kind, key, public fields, and whether its body is an import to seal. */
export interface PlannedChange {
  kind: ChangeKind;
  keyId?: string;
  detail: Record<string, unknown>;
  /** The import body to seal (JSON PrivateKey). */
  sealBody?: Buffer;
  /** Other keys the mutation touches (a move's new id): locked too. */
  alsoLocks?: string[];
}

/** Maps a mutation to the change it makes. Pure. Anything it cannot carry becomes a catch-up (a snapshot at replicas). */
export function planChange(m: MutationStart): PlannedChange {
  const catchup = (reason: string): PlannedChange => ({ kind: 'catchup', detail: { reason }, ...(m.keyId ? { keyId: m.keyId } : {}) });
  const json = m.body?.json as Record<string, unknown> | undefined;
  const isJson = json !== undefined && typeof json === 'object' && json !== null && !Array.isArray(json);
  const keyId = m.keyId;
  switch (m.operation) {
    case 'POST /keys':
    case 'PUT /keys/{id}':
      if (!m.body || !isJson) return catchup('key imported in a form the stream does not carry (PEM or unread body)');
      return { kind: 'key-imported', ...(keyId ? { keyId } : {}), detail: {}, sealBody: m.body.bytes };
    case 'POST /keys/generate':
      return catchup('key generated inside the NetHSM (not exportable)');
    case 'DELETE /keys/{id}':
      return { kind: 'key-deleted', keyId: keyId!, detail: {} };
    case 'POST /keys/{id}/move': {
      const newId = isJson ? json.newId : undefined;
      if (typeof newId !== 'string' || !isValidId(newId)) return catchup('key moved with an unreadable new id');
      return { kind: 'key-moved', keyId: keyId!, detail: { newId }, alsoLocks: [newId] };
    }
    case 'PUT /keys/{id}/cert': {
      const b = m.body;
      if (!b || b.bytes.length === 0 || b.bytes.length > MAX_CERT_BYTES) return catchup('certificate body not captured');
      return { kind: 'cert-set', keyId: keyId!, detail: { contentType: b.contentType ?? 'application/octet-stream', data: b.bytes.toString('base64') } };
    }
    case 'DELETE /keys/{id}/cert':
      return { kind: 'cert-removed', keyId: keyId!, detail: {} };
    case 'PUT /keys/{id}/label': {
      const label = isJson ? json.label : undefined;
      if (typeof label !== 'string') return catchup('label set with an unreadable body');
      return { kind: 'label-set', keyId: keyId!, detail: { label } };
    }
    case 'DELETE /keys/{id}/label':
      return { kind: 'label-removed', keyId: keyId!, detail: {} };
    case 'PUT /keys/{id}/restrictions/tags/{tag}':
    case 'DELETE /keys/{id}/restrictions/tags/{tag}': {
      const tag = m.path.split('/')[5];
      if (tag === undefined || !isValidId(tag)) return catchup('key tag change with an unreadable tag');
      return { kind: m.method.toUpperCase() === 'PUT' ? 'tag-added' : 'tag-removed', keyId: keyId!, detail: { tag } };
    }
    default:
      if (m.operation.includes('/users')) return catchup(`user change (${m.operation})`);
      return catchup(`change the stream does not carry (${m.operation})`);
  }
}

/**
 * The capture's key locks a mutation takes, namespace-qualified: its key and the other keys it touches (a move's new id)
 * as planned, and for `POST /keys/generate` the id the caller asks for (a `generate: replicated` substitute imports
 * under it, so that lock is taken before the barrier too; a substitute without one gets a fresh random id). Pure.
 */
export function lockedKeys(m: MutationStart): string[] {
  const plan = planChange(m);
  const ids = [plan.keyId, ...(plan.alsoLocks ?? [])];
  if (m.operation === 'POST /keys/generate') {
    const json = m.body?.json as { id?: unknown } | undefined;
    const id = typeof json === 'object' && json !== null && !Array.isArray(json) ? json.id : undefined;
    if (typeof id === 'string' && isValidId(id)) ids.push(id);
  }
  return [...new Set(ids.filter((k): k is string => k !== undefined).map((k) => `${m.namespace}/${k}`))];
}

/** A KeyHold of this capture's locks: taken over by `begin`, or let go by the gateway. */
class HeldKeys implements KeyHold {
  #release: (() => void) | undefined;

  constructor(
    readonly locks: KeyLocks,
    readonly keys: ReadonlySet<string>,
    release: () => void,
  ) {
    this.#release = release;
  }

  release(): void {
    this.adopt()?.();
  }

  /** Takes the keys over: this hold's own release becomes a no-op. Undefined when already let go or taken. */
  adopt(): (() => void) | undefined {
    const r = this.#release;
    this.#release = undefined;
    return r;
  }
}

export interface CaptureOptions {
  store: StateStore;
  log: Logger;
  recipients: Recipients;
  /** The namespace's epoch when it is primary here; undefined otherwise (the mutation is then refused). */
  primaryEpoch(namespace: string): number | undefined;
  /** A change was committed: wake the namespace's streams. */
  committed(change: LoggedChange): void;
  /**
   * Asks the device whether an intent took effect (after a lost answer). Resolves `commit`, `drop`, or `unknown`
   * (device unreachable: keep it open).
   */
  resolve(intent: Intent): Promise<'commit' | 'drop' | 'catchup' | 'unknown'>;
  /**
   * Makes the key pair and its import body for a `generate: replicated` namespace (src/keygen); resolves undefined for
   * other namespaces (the generate is then forwarded, and logged as a catch-up). Rejects with GenerateRequestInvalidError
   * (status 400) for a body the NetHSM would refuse.
   */
  generate?: (namespace: string, body: unknown) => Promise<{ id: string; importBody: Buffer } | undefined>;
  /**
   * Own-site sealing (docs/concurrency.md, "Racing writes re-applied"): while a sync runs here, an import
   * is also sealed to this site's own transport key, stored under `site` in the change's envelopes, so the change log
   * can re-apply it after a restore that erased it (log-replay.ts). `recipient()` returns this site's public transport
   * key when such a seal is wanted now (a sync runs and the key is ready), else undefined. Absent: never.
   */
  own?: {
    site: string;
    recipient(): OwnRecipient | undefined;
    /**
     * Told of each own window key as it is made (EnvelopeSealer `onNewKey`; copy what is kept): the log replay then
     * opens these envelopes without a NetHSM unwrap (StreamService hands it to its UnwrappedKeyCache).
     */
    remember?(wrapped: Buffer, key: Buffer): void;
  };
}

/** This site's own transport key's public half, for own-site sealing. */
export interface OwnRecipient {
  keyId: string;
  publicKeyPem: string;
}

interface Open {
  intent: Intent;
  release: () => void;
  /** end() was called: its outcome is being recorded. */
  ending?: boolean;
  /**
   * An import by `POST /keys`: the NetHSM picks the id, and an envelope is bound to its key id, so it is sealed in
   * `end` once the id is known. Our own copy of the body (the gateway may zero its buffer earlier); zeroed in `end`.
   */
  unsealed?: Buffer;
}

export class ChangeCapture implements MutationObserver {
  readonly #o: CaptureOptions;
  readonly #locks = new KeyLocks();
  readonly #open = new Map<string, Open>();
  /** Intents whose answer was lost and that the device could not settle yet: their keys stay locked. */
  readonly #unsettled = new Map<string, Open>();
  /** One envelope key per replica for a bounded window (envelope-keys.ts): one NetHSM unwrap per window there. */
  readonly #sealer: EnvelopeSealer;

  constructor(o: CaptureOptions) {
    this.#o = o;
    const own = o.own;
    const remember = own?.remember;
    this.#sealer = new EnvelopeSealer({
      onNewKey: (site, wrapped, key) => {
        if (remember && site === own.site) remember(wrapped, key);
      },
    });
  }

  /** Zeroes the envelope keys held for sealing. Idempotent. */
  close(): void {
    this.#sealer.close();
  }

  /** Intents waiting for the device to tell what happened (their keys stay locked until then). */
  get unsettled(): number {
    return this.#unsettled.size;
  }

  async substitute(m: MutationStart): Promise<Substitution | undefined> {
    if (m.operation !== 'POST /keys/generate' || !this.#o.generate) return undefined;
    const made = await this.#o.generate(m.namespace, m.body?.json);
    if (!made) return undefined;
    const location = `/api/v1/keys/${encodeURIComponent(made.id)}`;
    const answer = Buffer.from(JSON.stringify({ id: made.id }));
    return {
      method: 'PUT',
      path: `/keys/${encodeURIComponent(made.id)}`,
      operation: 'PUT /keys/{id}',
      keyId: made.id,
      contentType: 'application/json',
      body: made.importBody,
      answer: { status: 201, headers: { location, 'content-type': 'application/json' }, body: answer },
    };
  }

  /**
   * Takes the key locks `m` needs (lockedKeys), waiting for writes in flight on them until `signal` aborts. Called by
   * the gateway BEFORE the device barrier (lock order: capture key locks, then the barrier); see MutationObserver.
   */
  async lockKeys(m: MutationStart, signal?: AbortSignal): Promise<KeyHold> {
    const keys = lockedKeys(m);
    return new HeldKeys(this.#locks, new Set(keys), await this.#locks.acquire(keys, signal));
  }

  /** Writes waiting for a key another write holds (tests, status). */
  get waitingForKeys(): number {
    return this.#locks.waiting;
  }

  async begin(m: MutationStart, options: BeginOptions = {}): Promise<string> {
    const epoch = this.#o.primaryEpoch(m.namespace);
    if (epoch === undefined) throw new GatewayCaptureFailedError(`namespace ${m.namespace} is no longer primary here`, { namespace: m.namespace });
    const plan = planChange(m);
    const id = randomUUID();
    const release = await this.#lock(m, options);
    try {
      const sealNow = plan.sealBody !== undefined && plan.keyId !== undefined;
      const envelopes = sealNow ? await this.#seal({ namespace: m.namespace, keyId: plan.keyId!, kind: plan.kind, ref: id }, plan.sealBody!) : undefined;
      const unsealed = plan.sealBody !== undefined && !sealNow ? Buffer.from(plan.sealBody) : undefined;
      const { store } = this.#o;
      const opening = {
        id,
        namespace: m.namespace,
        epoch,
        kind: plan.kind,
        ...(plan.keyId !== undefined ? { keyId: plan.keyId } : {}),
        detail: plan.detail,
        ...(envelopes ? { envelopes } : {}),
      };
      // Marked open before the row is written: resolveOpen must never settle an intent whose mutation is in flight.
      const open: Open = { intent: { ...opening, ref: id, createdAt: 0 }, release, ...(unsealed ? { unsealed } : {}) };
      this.#open.set(id, open);
      try {
        // Durable before the mutation is forwarded (group commit: one fsync for the writes of this turn).
        // The certificate table forgets the key in the same durable write, before the NetHSM sees the mutation.
        const forget = certKeysOf(plan.kind, plan.keyId, plan.alsoLocks?.[0]);
        open.intent = await store.groupCommit(() => {
          store.keyCerts.forget(m.namespace, forget);
          return store.intents.open(opening);
        });
      } catch (err) {
        this.#open.delete(id);
        unsealed?.fill(0);
        throw err;
      }
      return id;
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * The key locks for `begin`, spanning begin..end: the gateway's hold taken over, and what it lacks (the decision
   * after admission named another namespace, a substitute's fresh id) taken without waiting when `inBarrier`: a
   * barrier holder that waited here would hold an exclusive hold up for a queue of writes (or deadlock with it).
   */
  async #lock(m: MutationStart, options: BeginOptions): Promise<() => void> {
    const keys = lockedKeys(m);
    const held = options.held instanceof HeldKeys && options.held.locks === this.#locks ? options.held : undefined;
    const adopted = held?.adopt();
    const missing = adopted ? keys.filter((k) => !held!.keys.has(k)) : keys;
    if (missing.length === 0) return adopted ?? (() => undefined);
    if (!options.inBarrier) {
      // Outside the barrier waiting is allowed, but only for all keys at once, in sorted order.
      adopted?.();
      return this.#locks.acquire(keys);
    }
    const more = this.#locks.tryAcquire(missing);
    if (!more) {
      adopted?.();
      throw new GatewayCaptureFailedError(
        `another write to key ${missing.map((k) => k.slice(m.namespace.length + 1)).join(', ')} is in flight, and a write admitted to the device barrier does not wait for it`,
        { namespace: m.namespace },
      );
    }
    return () => {
      adopted?.();
      more();
    };
  }

  /**
   * Records the outcome: on a 2xx the intent becomes the namespace's next change, durably, before this resolves (so
   * before the client sees its answer); otherwise it is dropped, or settled by asking the device (status 0). The
   * intent counts as open (resolveOpen leaves it alone) until this is done.
   */
  async end(intentId: string, outcome: MutationOutcome): Promise<MutationEnd> {
    const open = this.#open.get(intentId);
    if (!open || open.ending) return { recorded: 'unknown' };
    open.ending = true;
    const { intent } = open;
    const { store } = this.#o;
    try {
      if (outcome.status >= 200 && outcome.status < 300) {
        const keyId = this.#createdKeyId(intent, outcome.location);
        return this.#ended(await this.#commit(open.unsealed && keyId !== undefined ? await this.#sealLate(intent, keyId, open.unsealed) : intent, keyId));
      } else if (outcome.status === 0) {
        return await this.#settle(open);
      } else {
        await store.groupCommit(() => store.intents.remove(intent.id));
        return { recorded: 'dropped' };
      }
    } finally {
      this.#open.delete(intentId);
      open.unsealed?.fill(0);
      if (!this.#unsettled.has(intentId)) open.release();
    }
  }

  /**
   * Settles intents left open: by a crash (all rows in the table at start) or by a lost answer. Each is committed or
   * dropped by asking the device; those it cannot settle stay for the next call. Returns how many remain.
   */
  async resolveOpen(): Promise<number> {
    for (const intent of this.#o.store.intents.list()) {
      if (this.#open.has(intent.id)) continue;
      const unsettled = this.#unsettled.get(intent.id);
      const verdict = await this.#o.resolve(intent).catch(() => 'unknown' as const);
      if (verdict === 'unknown') continue;
      await this.#apply(intent, verdict);
      if (unsettled) {
        this.#unsettled.delete(intent.id);
        unsettled.release();
      }
    }
    return this.#o.store.intents.list().length;
  }

  async #settle(open: Open): Promise<MutationEnd> {
    const verdict = await this.#o.resolve(open.intent).catch(() => 'unknown' as const);
    if (verdict === 'unknown') {
      this.#unsettled.set(open.intent.id, open);
      this.#o.log.warn({ namespace: open.intent.namespace, intent: open.intent.id, kind: open.intent.kind }, 'the NetHSM did not answer a mutation and cannot say yet whether it took effect; the key stays locked until it can');
      return { recorded: 'unknown' };
    }
    return this.#apply(open.intent, verdict);
  }

  async #apply(intent: Intent, verdict: 'commit' | 'drop' | 'catchup'): Promise<MutationEnd> {
    const { store } = this.#o;
    if (verdict === 'drop') {
      const removed = await store.groupCommit(() => store.intents.remove(intent.id));
      this.#o.log.info({ namespace: intent.namespace, intent: intent.id, kind: intent.kind }, 'open intent dropped: the device shows it did not take effect');
      return removed ? { recorded: 'dropped' } : { recorded: 'unknown' };
    }
    const asCatchup = verdict === 'catchup' ? { ...intent, kind: 'catchup' as const, detail: { reason: `outcome of ${intent.kind} unknown after a lost answer` } } : intent;
    const change = await this.#commit(asCatchup, intent.keyId);
    if (change) this.#o.log.info({ namespace: intent.namespace, intent: intent.id, kind: asCatchup.kind }, 'open intent committed: the device shows it took effect');
    return this.#ended(change);
  }

  /**
   * What end() reports for a commit: the change and whether the change log alone can re-apply it (not a catch-up; an
   * import sealed to this site's own transport key too). `unknown` when someone else settled the intent.
   */
  #ended(change: LoggedChange | undefined): MutationEnd {
    if (!change) return { recorded: 'unknown' };
    const own = this.#o.own?.site;
    const replayable = change.kind !== 'catchup' && (change.kind !== 'key-imported' || (own !== undefined && change.envelopes?.[own] !== undefined));
    return { recorded: 'change', namespace: change.namespace, seq: change.seq, replayable };
  }

  /**
   * The intent becomes the namespace's next change (and leaves the intents), durably, in one transaction; resolves with
   * the change. Undefined when the intent was no longer there (settled by someone else): nothing is appended then.
   */
  async #commit(intent: Intent, keyId: string | undefined): Promise<LoggedChange | undefined> {
    const { store } = this.#o;
    const record = {
      kind: keyId === undefined && intent.kind !== 'catchup' ? ('catchup' as const) : intent.kind,
      ...(keyId !== undefined ? { keyId } : {}),
      ref: intent.id,
      detail: keyId === undefined && intent.kind !== 'catchup' ? { reason: `${intent.kind} whose key id is unknown` } : intent.detail,
      ...(intent.envelopes && keyId !== undefined ? { envelopes: intent.envelopes } : {}),
    };
    // Only the settler that removes the intent appends its change: resolveOpen works from a list read before its
    // awaits, so an intent it reaches may have been committed meanwhile (by end() or a concurrent resolveOpen).
    // And again once the NetHSM made the change: a read that raced it learns nothing (key-certs-repo.ts).
    const forget = certKeysOf(intent.kind, keyId ?? intent.keyId, newIdOf(intent));
    const change = await store.groupCommit(() => {
      store.keyCerts.forget(intent.namespace, forget);
      return store.intents.remove(intent.id) ? store.changelog.append(intent.namespace, intent.epoch, record) : undefined;
    });
    if (change) this.#o.committed(change);
    return change;
  }

  /** An import by `POST /keys` learns its id from the NetHSM's Location header. */
  #createdKeyId(intent: Intent, location: string | undefined): string | undefined {
    if (intent.keyId !== undefined || intent.kind !== 'key-imported') return intent.keyId;
    const last = location?.split('/').pop();
    if (last === undefined) return undefined;
    let id: string;
    try {
      id = decodeURIComponent(last);
    } catch {
      return undefined;
    }
    return isValidId(id) ? id : undefined;
  }

  /** The intent of a `POST /keys` import with its envelopes, sealed now that the NetHSM named the id. */
  async #sealLate(intent: Intent, keyId: string, body: Buffer): Promise<Intent> {
    const binding = { namespace: intent.namespace, keyId, kind: intent.kind, ref: intent.id };
    // The NetHSM made the change: it is committed whatever happens here (without envelopes replicas get a catch-up).
    const envelopes = await this.#seal(binding, body).catch((err: unknown) => {
      this.#o.log.warn({ namespace: intent.namespace, intent: intent.id, err }, 'cannot seal an import for its replicas; they get a catch-up instead');
      return undefined;
    });
    return envelopes ? { ...intent, envelopes } : intent;
  }

  /**
   * One envelope per replica site whose transport key is known, bound to the change (`binding`); the others get the
   * import as a catch-up.
   */
  async #seal(binding: EnvelopeBinding, body: Buffer): Promise<Record<string, Envelope> | undefined> {
    const { namespace } = binding;
    const out: Record<string, Envelope> = {};
    for (const site of this.#o.recipients.sites()) {
      const key = await this.#o.recipients.get(site);
      if (!key) continue;
      try {
        out[site] = this.#sealer.seal(body, { site, keyId: key.keyId, publicKeyPem: key.publicKeyPem }, envelopeContext(binding));
      } catch (err) {
        this.#o.log.warn({ namespace, peer: site, err }, 'cannot seal an import for a peer; it gets a catch-up instead');
      }
    }
    this.#sealOwn(out, binding, body);
    return Object.keys(out).length > 0 ? out : undefined;
  }

  /**
   * Adds the envelope to this site's own transport key when a merge-restore tracks writes (CaptureOptions.own). A
   * failure never fails the write: the change is then just not re-appliable from the log (the sync merges again).
   */
  #sealOwn(out: Record<string, Envelope>, binding: EnvelopeBinding, body: Buffer): void {
    const own = this.#o.own;
    if (!own) return;
    try {
      const key = own.recipient();
      if (key) out[own.site] = this.#sealer.seal(body, { site: own.site, keyId: key.keyId, publicKeyPem: key.publicKeyPem }, envelopeContext(binding));
    } catch (err) {
      this.#o.log.warn({ namespace: binding.namespace, err }, "cannot seal an import to this site's own transport key; a merge-restore it races merges again");
    }
  }
}

/** A move's new id, from its intent's detail. */
function newIdOf(intent: Intent): string | undefined {
  const n = (intent.detail as { newId?: unknown } | undefined)?.newId;
  return intent.kind === 'key-moved' && typeof n === 'string' ? n : undefined;
}
