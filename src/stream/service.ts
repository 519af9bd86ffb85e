/**
 * The daemon's streaming replication, in one long-lived part: at a primary, change capture for the gateway, the change
 * feed served to peers, retention and the settling of open intents; at a replica, one puller per namespace; at every
 * site, this site's transport key (created in the NetHSM when a root Operator credential is configured) and the peers'.
 * Idempotent start()/close(). Exposes the peer API handlers and the per-namespace stream status.
 */
import { GenerateRequestInvalidError, InternalError, NamespaceUnknownError } from '../errors.js';
import type { LoadedSecrets } from '../config/secrets.js';
import { NETHSM_MEMBER, type SiteContext } from '../daemon/context.js';
import { ROOT_CREDENTIALS, replicationCredential } from '../daemon/credentials.js';
import { generateForImportAsync } from '../keygen/index.js';
import type { NetHsmClient } from '../nethsm/client.js';
import type { LoggedChange } from '../state/changelog-repo.js';
import type { Intent } from '../state/intents-repo.js';
import type { Mutex } from '../util/mutex.js';
import type { ApplyDeps } from './apply.js';
import { ChangeCapture } from './capture.js';
import { ChangeFeed } from './feed.js';
import { resolveIntent } from './intent-resolve.js';
import { NamespacePuller, type PullerStatus } from './puller.js';
import { LogReplay } from './log-replay.js';
import { Recipients } from './recipients.js';
import { UnwrappedKeyCache } from './envelope-keys.js';
import { ensureTransportKeyAt, TransportKey, type TransportKeyInfo } from './transport-key.js';
import { withDeadline } from '../util/deadline.js';

export interface StreamServiceOptions {
  ctx: SiteContext;
  secrets: LoadedSecrets;
  /** The namespace's apply lock, shared with its snapshot syncs. */
  lock(namespace: string): Mutex;
  /** Takes a snapshot of the namespace from its primary now. */
  snapshot(namespace: string, reason: string): Promise<void>;
  /** Transport key size when created (tests pass 2048). */
  transportKeyBits?: 2048 | 3072 | 4096;
  /** How often the background tasks run (retention, open intents, transport keys). Default 60 s. */
  maintenanceIntervalMs?: number;
}

export interface NamespaceStreamStatus extends PullerStatus {
  /** Replica: the position applied; primary: the head of the change log. */
  position: { epoch: number; seq: number } | null;
  changesBehind: number | null;
  lagSeconds: number | null;
}

export class StreamService {
  readonly capture: ChangeCapture;
  readonly feed: ChangeFeed;
  readonly recipients: Recipients;
  readonly transportKey: TransportKey | undefined;
  /** Re-applies racing gateway writes from the change log after a merge-restore (log-replay.ts). */
  readonly logReplay: LogReplay;
  readonly #o: StreamServiceOptions;
  readonly #clients = new Map<string, NetHsmClient>();
  readonly #pullers = new Map<string, NamespacePuller>();
  #timer: NodeJS.Timeout | undefined;
  #intentTimer: NodeJS.Timeout | undefined;
  #transportKeyReady = false;
  #started = false;
  #closing: Promise<void> | undefined;
  /** Envelope keys this site unwrapped recently (envelope-keys.ts). */
  readonly #unwrapped = new UnwrappedKeyCache();

  constructor(o: StreamServiceOptions) {
    this.#o = o;
    const { ctx, secrets } = o;
    for (const [i, n] of ctx.config.namespaces.entries()) {
      const cred = secrets.namespaces[n.name];
      if (cred) this.#clients.set(n.name, ctx.nethsm.pool.withAuth(cred.username, cred.password, replicationCredential(i, n.name)));
    }
    const op = secrets.nethsm.operator;
    this.transportKey = op
      ? new TransportKey({
          site: ctx.site,
          admin: ctx.nethsm.admin,
          operator: ctx.nethsm.pool.withAuth(op.username, op.password, ROOT_CREDENTIALS.operator),
          logger: ctx.log,
          ...(o.transportKeyBits ? { bits: o.transportKeyBits } : {}),
        })
      : undefined;
    this.recipients = new Recipients({ store: ctx.store, peers: ctx.peers, log: ctx.log });
    this.feed = new ChangeFeed({ site: ctx.site, store: ctx.store, heartbeatIntervalMs: ctx.config.stream.heartbeatIntervalMs, log: ctx.log });
    this.capture = new ChangeCapture({
      store: ctx.store,
      log: ctx.log,
      recipients: this.recipients,
      primaryEpoch: (ns) => {
        const row = ctx.store.isOpen ? ctx.store.roles.get(ns) : undefined;
        return row && row.role === 'primary' && row.primarySite === ctx.site ? row.epoch : undefined;
      },
      committed: (c) => this.#committed(c),
      resolve: (i) => this.#resolve(i),
      // While a merge-restore tracks writes, imports are sealed to this site's own key too (log-replay.ts).
      own: {
        site: ctx.site,
        recipient: () => {
          // While a sync runs, a merge-restore tracks writes, or a replay is pending (race-replayer.ts `sealOwn`).
          if (!(ctx.barrier.tracking || ctx.raceReplayer?.sealOwn === true) || !this.transportKey || !this.#transportKeyReady) return undefined;
          const info = this.transportKey.publicInfo();
          return { keyId: info.keyId, publicKeyPem: info.publicKeyPem };
        },
        // Its own window keys are known here: the log replay opens own envelopes without a NetHSM unwrap.
        remember: (wrapped, key) => this.#unwrapped.remember(wrapped, key),
      },
      generate: async (ns, body) => {
        if (ctx.config.namespaces.find((n) => n.name === ns)?.generate !== 'replicated') return undefined;
        try {
          return await generateForImportAsync(body);
        } catch (err) {
          if (err instanceof GenerateRequestInvalidError) throw err;
          throw new GenerateRequestInvalidError(400, 'the key could not be generated', { namespace: ns, cause: err });
        }
      },
    });
    const apply: ApplyDeps = {
      site: ctx.site,
      store: ctx.store,
      client: (ns) => this.client(ns),
      transportKey: () => {
        if (!this.transportKey || !this.#transportKeyReady) return undefined;
        const info = this.transportKey.publicInfo();
        return { keyId: info.keyId, fingerprint: info.fingerprint, unwrap: (w) => this.#unwrapped.unwrap(w, (x) => this.transportKey!.unwrap(x)) };
      },
    };
    this.logReplay = new LogReplay({ store: ctx.store, site: ctx.site, client: (ns) => this.client(ns), transportKey: apply.transportKey });
    for (const n of ctx.config.namespaces) {
      this.#pullers.set(
        n.name,
        new NamespacePuller({
          namespace: n.name,
          site: ctx.site,
          store: ctx.store,
          peers: ctx.peers,
          apply,
          lock: o.lock(n.name),
          barrier: ctx.barrier,
          snapshot: (reason) => o.snapshot(n.name, reason),
          heartbeatIntervalMs: ctx.config.stream.heartbeatIntervalMs,
          catchupDebounceMs: ctx.config.stream.catchupDebounceMs,
          catchupWindowMs: ctx.config.stream.catchupWindowMs,
          catchupMaxChanges: ctx.config.stream.catchupMaxChanges,
          monitor: ctx.monitor,
          deviceMember: NETHSM_MEMBER,
          metrics: ctx.metrics,
          log: ctx.log,
          // The window never has more imports in flight than the pool has connections: more would only wait there.
          maxApplyConcurrency: ctx.nethsm.pool.connections,
        }),
      );
    }
  }

  /** The namespace's replication account on this site's NetHSM. */
  client(namespace: string): NetHsmClient {
    const c = this.#clients.get(namespace);
    if (!c) throw new NamespaceUnknownError(`namespace ${namespace} has no replication account configured`, { namespace });
    return c;
  }

  /** Starts pullers and background tasks; the transport key and open intents are settled in the background. Idempotent. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const every = this.#o.maintenanceIntervalMs ?? 60_000;
    this.#timer = setInterval(() => void this.#maintain(), every);
    this.#timer.unref();
    void this.#maintain(false);
    // Intents a crash left open are settled before the gateway takes writes again, and the transport key is made
    // ready before peers ask for it (both bounded: an unreachable NetHSM leaves them to the background task).
    const both = Promise.all([this.capture.resolveOpen(), this.#ensureTransportKey()]);
    await withDeadline(both, 10_000, () => new Error('left to the background task')).catch(() => undefined);
    for (const p of this.#pullers.values()) p.start();
  }

  async close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#timer) clearInterval(this.#timer);
      if (this.#intentTimer) clearTimeout(this.#intentTimer);
      this.feed.notifyAll();
      await Promise.all([...this.#pullers.values()].map((p) => p.close()));
      this.capture.close();
      this.#unwrapped.clear();
    })();
    return this.#closing;
  }

  /** A role changed (promote, demote, fence, follow): streams and pullers re-check at once. */
  roleChanged(namespace: string): void {
    this.feed.notify(namespace);
    this.#pullers.get(namespace)?.poke();
  }

  /**
   * A snapshot sync recorded `namespace`'s position inside its exclusive hold (after its restore): its puller
   * reconnects from that position (NamespacePuller.restored).
   */
  restored(namespace: string): void {
    this.#pullers.get(namespace)?.restored();
  }

  /** A member the namespace streams from answers again: wake its puller if it waits, leaving a live stream alone. */
  resume(namespace: string): void {
    this.#pullers.get(namespace)?.wake();
  }

  /**
   * Whether the stream change `seq` of replica namespace `namespace` from `source` (a write ticket's `stream` replay)
   * can be made good after a restore erased it by `rewind`: the namespace is a replica of `source` here, and its
   * stored position is in the role's epoch and in the epoch and change log the change was applied in, at or past it
   * (PositionsRepo.canRewind). Synchronous, reads only. Ask it for every raced change before rewinding any.
   */
  canRewind(namespace: string, source: string, seq: number): boolean {
    const { store } = this.#o.ctx;
    if (!store.isOpen) return false;
    const row = store.roles.get(namespace);
    if (!row || row.role !== 'replica' || row.primarySite !== source) return false;
    if (store.positions.get(namespace, source)?.epoch !== row.epoch) return false;
    return store.positions.canRewind(namespace, source, seq);
  }

  /**
   * Moves the stream position of `namespace` from `source` back to just before change `seq`, durably (one SQLite
   * transaction, a savepoint inside the caller's), forgetting the applied records at and after it, so the puller
   * applies `seq` and every later change again; never forward. Its running puller drops its connection, apply window
   * and in-memory cursor and resumes from the stored position; one not running starts from it. A change the primary
   * pruned meanwhile makes that primary answer `snapshot-required`: the namespace then catches up by a snapshot sync,
   * as after any position a snapshot moved back (feed.ts, puller.ts).
   * Contract: `canRewind(namespace, source, seq)` holds, or the position is already before `seq` (a no-op: a rewind
   * for an earlier change of the same namespace went further back), else InternalError, nothing changed; and no
   * change of the namespace is being applied (the caller holds the device exclusively, which drained them). For a
   * merge-restore: call it inside the exclusive hold, before the restore.
   */
  rewind(namespace: string, source: string, seq: number): void {
    if (this.#before(namespace, source, seq)) return;
    if (!this.canRewind(namespace, source, seq)) {
      throw new InternalError(`the stream position of ${namespace} from ${source} cannot be moved back before change ${seq}`, { namespace, site: source });
    }
    const { store, log } = this.#o.ctx;
    const before = store.positions.get(namespace, source);
    store.positions.rewind(namespace, source, seq);
    this.#pullers.get(namespace)?.rewound(before?.seq ?? seq - 1, seq - 1);
    log.info({ namespace, from: source, position: `${before?.epoch}.${before?.seq}`, rewoundTo: `${before?.epoch}.${seq - 1}` }, 'stream position moved back before changes a restore erased; they are applied again');
  }

  /**
   * Resolves once every replica stream a merge-restore moved back has applied again what its restore erased (its
   * position back where it was; NamespacePuller.reapplied), or after `maxMs`, whichever comes first. Never rejects.
   * For device work that can wait and would take the device from that re-apply meanwhile: a restore's verification.
   */
  async reapplied(maxMs: number): Promise<void> {
    const all = Promise.all([...this.#pullers.values()].map((p) => p.reapplied()));
    await withDeadline(all, maxMs, () => new Error('re-apply still running')).catch(() => undefined);
  }

  /**
   * Whether the position is already before change `seq` in the role's epoch (an earlier rewind for an earlier change
   * went further back): the stream applies `seq` again without a rewind.
   */
  #before(namespace: string, source: string, seq: number): boolean {
    const { store } = this.#o.ctx;
    const row = store.isOpen ? store.roles.get(namespace) : undefined;
    const pos = store.isOpen ? store.positions.get(namespace, source) : undefined;
    return row?.role === 'replica' && row.primarySite === source && pos?.epoch === row.epoch && pos.seq !== undefined && pos.seq < seq;
  }

  /** Peer API: this site's transport key. */
  async publicTransportKey(): Promise<TransportKeyInfo> {
    if (!this.transportKey) throw new InternalError(`site ${this.#o.ctx.site} has no transport key (configure nethsm.credentials.operator)`, { site: this.#o.ctx.site });
    if (!this.#transportKeyReady) await this.#ensureTransportKey();
    return this.transportKey.publicInfo();
  }

  status(namespace: string): NamespaceStreamStatus | null {
    const { store } = this.#o.ctx;
    const row = store.roles.get(namespace);
    if (!row) return null;
    if (row.role === 'primary') {
      const head = store.changelog.head(namespace, row.epoch);
      return { state: 'streaming', head, lastHeartbeatAt: null, lastError: null, pendingCatchup: null, onDevice: this.#primaryOnDevice(namespace, head), position: head, changesBehind: 0, lagSeconds: 0 };
    }
    const p = this.#pullers.get(namespace)?.status() ?? { state: 'idle' as const, head: null, lastHeartbeatAt: null, lastError: null, pendingCatchup: null, onDevice: null };
    const pos = store.positions.get(namespace, row.primarySite);
    const position = pos?.epoch !== undefined && pos.seq !== undefined ? { epoch: pos.epoch, seq: pos.seq } : null;
    // A failing stream's head is what the primary said before the failure: '0 behind, lag 0s' would vouch for a
    // currency nobody can check now (the operator drill: a partitioned replica showed both). Unknown behind, and the
    // lag from the position's time, until it streams again.
    const behind = p.lastError === null && p.head && position && p.head.epoch === position.epoch ? Math.max(0, p.head.seq - position.seq) : null;
    const lag = behind === 0 ? 0 : pos?.positionTakenAt !== undefined ? Math.max(0, (Date.now() - pos.positionTakenAt) / 1000) : null;
    return { ...p, position, changesBehind: behind, lagSeconds: lag };
  }

  /**
   * A primary's changes on its device: the log's head, but never past a change a restore erased and a pending
   * re-apply has not put back (race-replayer.ts; a snapshot served meanwhile claims no more: failover.ts `heads`).
   * A stored record that is not valid says nothing here (status names it).
   */
  #primaryOnDevice(namespace: string, head: { epoch: number; seq: number }): { epoch: number; seq: number } {
    let at = head;
    for (const r of this.#o.ctx.store.raceReplays.all()) {
      if (r.namespace === namespace && r.invalid === undefined && r.fromSeq - 1 < at.seq) at = { epoch: r.epoch, seq: r.fromSeq - 1 };
    }
    return at;
  }

  #committed(c: LoggedChange): void {
    this.feed.notify(c.namespace);
    this.#o.ctx.metrics.streamPositionSeq.set({ namespace: c.namespace }, c.seq);
    if (this.capture.unsettled > 0) this.#scheduleIntents();
  }

  async #resolve(intent: Intent) {
    const client = this.#clients.get(intent.namespace);
    if (!client) return 'catchup' as const;
    const verdict = await resolveIntent(intent, client);
    if (verdict === 'unknown') this.#scheduleIntents();
    return verdict;
  }

  /** Retries unsettled intents soon (a lost answer), not only at the next maintenance. */
  #scheduleIntents(): void {
    if (this.#intentTimer || this.#closing) return;
    this.#intentTimer = setTimeout(() => {
      this.#intentTimer = undefined;
      void this.capture.resolveOpen().catch(() => undefined);
    }, 1_000);
    this.#intentTimer.unref();
  }

  async #ensureTransportKey(): Promise<void> {
    if (!this.transportKey) return;
    const { ctx } = this.#o;
    const tk = this.transportKey;
    if (ctx.work.inheritedTransportKeyPending()) {
      // Deleting and creating write to the device: a shared barrier hold, so no merge-restore built from an older
      // backup can wipe the new key. Its ticket stays `unknown` (a transport key exists on the device only: a restore
      // that erased it cannot re-apply it), and it is unscoped (a root key; verification compares root keys).
      await ctx.barrier.shared(() => tk.replaceInherited(), { wait: 'unbounded', purpose: 'transport key replacement' });
      this.#unwrapped.clear();
      await ctx.work.markTransportKeyReplaced();
      ctx.log.info({ keyId: tk.keyId, fingerprint: tk.publicInfo().fingerprint }, 'replaced the transport key inherited from the primary at bootstrap');
    } else await ensureTransportKeyAt(tk, ctx.barrier);
    this.#transportKeyReady = true;
  }

  /** Background: transport keys, open intents, retention. Never throws. */
  async #maintain(intents = true): Promise<void> {
    const { ctx } = this.#o;
    if (this.#closing || !ctx.store.isOpen) return;
    if (this.transportKey && !this.#transportKeyReady) {
      await this.#ensureTransportKey().catch((err: unknown) => ctx.log.warn({ err }, 'transport key not ready; imports reach this site through snapshots until it is'));
    }
    await this.recipients.refreshAll().catch(() => undefined);
    const left = intents ? await this.capture.resolveOpen().catch(() => -1) : 0;
    if (left > 0) ctx.log.warn({ open: left }, 'open intents wait for the NetHSM to tell their outcome');
    try {
      const r = ctx.config.stream.retention;
      const dropped = ctx.store.changelog.prune(r.maxAgeMs, r.maxChanges);
      ctx.store.applied.prune(r.maxAgeMs);
      if (dropped > 0) ctx.log.info({ dropped }, 'change log retention');
    } catch (err) {
      ctx.log.warn({ err }, 'change log retention failed; retried later');
    }
  }
}
