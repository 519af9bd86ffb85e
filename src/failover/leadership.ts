/**
 * Automatic failover, the loop: this daemon's etcd lease is renewed on its own timer (every interval, whatever the
 * namespaces are doing), and for every namespace with `failover: automatic` each tick reads the namespace's keys,
 * decides (leader-policy.ts) and acts: hold, claim, step down, campaign + promote, follow. Started by the Daemon before the gateway (so a restarted primary never takes a write before it holds the
 * key again) and closed after it.
 *
 * The write cut-off does not wait for a tick: every successful renewal re-arms a timer at the lease deadline
 * (`leaseDeadline`, read on the monotonic clock `performance.now()`), which steps every primary namespace down at
 * once, a pure SQLite role change (`applyRoleChange`), before etcd can expire the lease and another site take the key.
 * Lock order: role changes first; device steps follow through the barrier with their tokens (Failover).
 */
import { performance } from 'node:perf_hooks';
import type { EtcdConfig } from '../config/schema.js';
import { FailoverLeaderHeldError, InternalError, NhrError } from '../errors.js';
import type { SiteContext } from '../daemon/context.js';
import type { Failover, LeaderGate } from '../daemon/failover.js';
import { applyRoleChange, lastSyncCounts } from '../roles/apply.js';
import { stepDown } from '../roles/role-machine.js';
import { decide, leaseDeadline, nextTermEpoch, type Decision, type LeaderRecord } from './leader-policy.js';
import type { LeaderStore, NamespaceKeys } from './leader-store.js';

/** What `status` shows per automatic namespace. */
export interface LeadershipStatus {
  mode: 'automatic';
  /** Whether this site holds a lease that is still safely valid, and for how much longer (ms). */
  leaseValid: boolean;
  leaseValidForMs: number | null;
  leader: { site: string; epoch: number } | null;
  /** The last decision or the reason nothing happened (e.g. "etcd unreachable: …", "not promoting: behind"). */
  state: string;
  lastError: string | null;
}

export class Leadership implements LeaderGate {
  /**
   * Loaded by `start()`: the etcd client (etcd3, gRPC, protobufs) costs a daemon about 37 MB of RSS, which a daemon
   * without automatic namespaces should not carry (anti-entropy at a million keys has a 200 MB budget).
   */
  private storeRef: LeaderStore | undefined;
  private readonly intervalMs: number;
  private lease: string | undefined;
  private deadline = 0;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private renewal: Promise<boolean> | undefined;
  /** Renewal attempts failed in a row (for the retry's backoff). */
  private renewFailures = 0;
  private lastError: string | null = null;
  private readonly views = new Map<string, { leader: LeaderRecord | undefined; state: string }>();
  /** Why each namespace stepped down here, while it stays stepped down: status keeps saying it under later notes. */
  private readonly steppedDown = new Map<string, string>();
  private state: 'new' | 'started' | 'closed' = 'new';
  private readonly automaticSet: ReadonlySet<string>;

  constructor(
    private readonly ctx: SiteContext,
    private readonly failover: Failover,
    private readonly config: EtcdConfig,
  ) {
    this.automaticSet = new Set(ctx.config.namespaces.filter((n) => n.failover === 'automatic').map((n) => n.name));
    // Three renewal attempts fit in the safe part of the lease; every etcd call is bounded by one interval.
    this.intervalMs = Math.max(100, Math.floor((config.leaseTtlMs - config.safetyMarginMs) / 3));
  }

  private get store(): LeaderStore {
    if (this.storeRef === undefined) throw new InternalError('automatic failover used before start()');
    return this.storeRef;
  }

  automatic(namespace: string): boolean {
    return this.automaticSet.has(namespace);
  }

  /**
   * Grants the lease and runs a first tick (a restarted primary claims its key back or steps down) before returning.
   * Never throws for etcd trouble: fail safe (primaries step down), and the loop keeps trying. Idempotent.
   */
  async start(): Promise<void> {
    if (this.state !== 'new' || this.automaticSet.size === 0) return;
    this.state = 'started';
    const { LeaderStore } = await import('./leader-store.js');
    this.storeRef = new LeaderStore(this.config, this.intervalMs);
    await this.renew();
    await this.tick();
    this.schedule();
    this.scheduleRenewal();
  }

  /** Stops the loop; the lease is left to expire (a restart within the TTL claims the key back). Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasStarted = this.state === 'started';
    this.state = 'closed';
    clearTimeout(this.tickTimer);
    clearTimeout(this.renewTimer);
    clearTimeout(this.deadlineTimer);
    await this.ticking;
    await this.renewing;
    if (wasStarted) await this.storeRef?.close(false);
  }

  status(namespace: string): LeadershipStatus | undefined {
    if (!this.automatic(namespace)) return undefined;
    const v = this.views.get(namespace);
    const left = this.deadline - performance.now();
    const valid = this.lease !== undefined && left > 0;
    return {
      mode: 'automatic',
      leaseValid: valid,
      leaseValidForMs: valid ? Math.round(left) : null,
      leader: v?.leader ? { site: v.leader.site, epoch: v.leader.epoch } : null,
      state: v?.state ?? 'starting',
      lastError: this.lastError,
    };
  }

  private schedule(): void {
    if (this.state !== 'started') return;
    this.tickTimer = setTimeout(() => {
      this.ticking = this.tick().finally(() => {
        this.ticking = undefined;
        this.schedule();
      });
    }, this.intervalMs);
  }

  /**
   * Renewals run on their own timer, one per interval, never behind the namespaces' work: a tick that waits on etcd
   * calls that hang (a member cut off from the majority) or on a promote's device steps would otherwise delay the next
   * renewal past the cut-off deadline, and every primary of the site would step down though etcd was fine.
   */
  private scheduleRenewal(delayMs = this.intervalMs): void {
    if (this.state !== 'started') return;
    this.renewTimer = setTimeout(() => {
      const startedAt = performance.now();
      this.renewing = this.renew().then((renewed) => {
        this.renewing = undefined;
        this.renewFailures = renewed ? 0 : this.renewFailures + 1;
        this.scheduleRenewal(nextRenewalDelay(this.intervalMs, performance.now() - startedAt, this.renewFailures));
      });
    }, delayMs);
  }

  /** The lease still safely valid, or undefined. */
  private validLease(): string | undefined {
    return this.lease !== undefined && performance.now() < this.deadline ? this.lease : undefined;
  }

  /**
   * One tick: every automatic namespace at once. Namespaces are independent (each its own key, and a promote's device
   * steps queue at the barrier anyway); one after the other, a promote whose steps waited on the lost site held back
   * the next namespace's promotion by as long (the fault suite's isolate-primary: 27 s instead of 13 s).
   */
  private async tick(): Promise<void> {
    const started = performance.now();
    await Promise.all(
      [...this.automaticSet].map(async (ns) => {
        if (this.state === 'closed') return;
        try {
          await this.tickNamespace(ns);
        } catch (err) {
          this.lastError = err instanceof Error ? err.message : String(err);
          this.ctx.log.warn({ namespace: ns, err: err instanceof NhrError ? err : { message: this.lastError } }, 'automatic failover: tick failed; retried');
        }
      }),
    );
    const took = performance.now() - started;
    if (took > this.intervalMs) this.ctx.log.warn({ tookMs: Math.round(took), intervalMs: this.intervalMs }, 'automatic failover: slow tick');
  }

  /** Renews (or grants) the lease; one at a time (the renewal timer and a promote's `acquire` may meet). Never rejects. */
  private renew(): Promise<boolean> {
    this.renewal ??= this.renewNow().finally(() => (this.renewal = undefined));
    return this.renewal;
  }

  /** Renews (or grants) the lease; on success re-arms the write cut-off at the new deadline. Whether it did. */
  private async renewNow(): Promise<boolean> {
    const sentAt = performance.now();
    try {
      const ok = this.lease !== undefined && (await this.store.renew());
      if (!ok) {
        this.lease = undefined;
        this.lease = await this.store.grant();
      }
      this.deadline = leaseDeadline(sentAt, this.config.leaseTtlMs, this.config.safetyMarginMs);
      this.lastError = null;
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = setTimeout(() => this.cutOff(), Math.max(0, this.deadline - performance.now()));
      this.ctx.metrics.failoverLeaseValid.set(1);
      return true;
    } catch (err) {
      this.lastError = err instanceof Error ? err.message : String(err);
      this.ctx.log.warn({ err: { message: this.lastError }, tookMs: Math.round(performance.now() - sentAt), leaseValidForMs: Math.round(this.deadline - performance.now()) }, 'automatic failover: lease renewal failed');
      if (performance.now() >= this.deadline) this.cutOff();
      return false;
    }
  }

  /** The lease could not be renewed in time: every primary namespace here stops taking writes now. */
  private cutOff(): void {
    if (performance.now() < this.deadline) return;
    this.ctx.metrics.failoverLeaseValid.set(0);
    for (const ns of this.automaticSet) {
      const row = this.ctx.store.isOpen ? this.ctx.store.roles.get(ns) : undefined;
      if (row?.role === 'primary') this.stepDown(ns, 'the etcd lease was not renewed in time (no etcd majority reachable?)');
    }
  }

  private stepDown(namespace: string, reason: string): void {
    const { ctx } = this;
    const row = ctx.store.roles.require(namespace);
    if (row.role !== 'primary') return;
    const next = applyRoleChange(ctx.store, stepDown(row, { localSite: ctx.site, reason }), 'daemon');
    ctx.roleChanged?.(namespace);
    ctx.metrics.setRole(namespace, next.role, next.epoch);
    ctx.metrics.failoverStepDownsTotal.inc({ namespace });
    this.steppedDown.set(namespace, `stepped down: ${reason}`);
    this.note(namespace, undefined, `stepped down: ${reason}`);
    ctx.log.warn({ namespace, epoch: next.epoch, reason }, 'automatic failover: stopped taking writes (stepped down)');
  }

  private note(namespace: string, leader: LeaderRecord | undefined, state: string): void {
    const before = this.views.get(namespace);
    this.views.set(namespace, { leader: leader ?? before?.leader, state });
  }

  private async tickNamespace(namespace: string): Promise<void> {
    const { ctx } = this;
    const row = ctx.store.roles.require(namespace);
    const cfg = ctx.config.namespaces.find((n) => n.name === namespace)!;
    const pos = row.role === 'primary' ? undefined : ctx.store.positions.get(namespace, row.primarySite);
    const taken = pos?.positionTakenAt ?? null;
    let keys: NamespaceKeys | undefined;
    let error: string | undefined;
    try {
      keys = await this.store.read(namespace);
      const lease = this.validLease();
      if (lease && row.role === 'replica') await this.store.publishCandidate(namespace, ctx.site, taken, lease);
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      this.lastError = error;
    }
    const d = decide(
      {
        row,
        localSite: ctx.site,
        view: keys ? { kind: 'read', ...keys } : { kind: 'unreachable', error: error ?? 'unknown' },
        lease: this.validLease(),
        lagMs: taken === null ? undefined : Math.max(0, Date.now() - taken),
        // As promote decides it: a sync that only could not reach the lost primary does not count (src/roles/apply.ts).
        lastSyncOk: lastSyncCounts(pos),
        maxLagMs: cfg.maxLagForPromoteMs,
        positionTakenAt: taken,
        tookEpoch: ['local', 'etcd', 'config'].includes(ctx.store.epochs.get(namespace, row.epoch)?.learnedFrom ?? 'local'),
      },
      ctx.store.epochs.highest(namespace) ?? row.epoch,
    );
    await this.act(namespace, d, keys);
  }

  private async act(namespace: string, d: Decision, keys: NamespaceKeys | undefined): Promise<void> {
    const { ctx } = this;
    const row = ctx.store.roles.require(namespace);
    switch (d.kind) {
      case 'hold':
        this.note(namespace, keys?.leader, keys ? 'primary: holds the leader key' : 'primary: etcd unreachable, lease still valid');
        return;
      case 'wait': {
        // A site that stepped down and waits (etcd unreachable, say) still says first that it stepped down, and why.
        const down = row.role === 'fenced' && row.primarySite === ctx.site ? this.steppedDown.get(namespace) : undefined;
        if (!down) this.steppedDown.delete(namespace);
        this.note(namespace, keys?.leader, down ? `${down}; ${d.reason}` : d.reason);
        return;
      }
      case 'step-down':
        this.stepDown(namespace, d.reason);
        return;
      case 'claim': {
        const lease = this.validLease();
        if (!lease || !keys) return;
        const took = await this.store.take(namespace, { site: ctx.site, epoch: row.epoch, lease, expected: d.expected, floorRevision: keys.floorRevision, floor: Math.max(keys.floor, row.epoch) });
        this.note(namespace, { site: ctx.site, epoch: row.epoch, lease, modRevision: '0' }, took ? 'primary: took the leader key' : 'primary: the leader key changed meanwhile; deciding again');
        if (took) ctx.log.info({ namespace, epoch: row.epoch }, 'automatic failover: holds the leader key');
        return;
      }
      case 'follow':
        this.note(namespace, d.leader, `following ${d.leader.site} at epoch ${d.leader.epoch}`);
        await this.failover.observe(namespace, { from: 'etcd', epoch: d.leader.epoch, primarySite: d.leader.site });
        return;
      case 'campaign':
        await this.campaign(namespace, d.epoch, keys!, d.expected, d.viaPromote === true);
        return;
    }
  }

  /** Takes the vacant key for a new term and promotes (or, after a step-down with no term since, resumes). */
  private async campaign(namespace: string, epoch: number, keys: NamespaceKeys, expected: LeaderRecord | undefined, viaPromote: boolean): Promise<void> {
    const { ctx } = this;
    const row = ctx.store.roles.require(namespace);
    if (row.role === 'fenced' && !viaPromote) {
      const lease = this.validLease();
      if (!lease || !(await this.store.take(namespace, { site: ctx.site, epoch, lease, expected, floorRevision: keys.floorRevision, floor: epoch }))) return;
      const { pending } = await this.failover.resumeLeadership(namespace, epoch);
      const line = leadershipLogLine('resumed', pending);
      this.note(namespace, { site: ctx.site, epoch, lease, modRevision: '0' }, `primary again at epoch ${epoch} (no other term since the step-down)${pending ? '; writes refused until its administrators are restored' : ''}`);
      ctx.log[line.level]({ namespace, epoch, ...(pending ? { administratorsPending: pending.cause } : {}) }, line.msg);
      return;
    }
    this.note(namespace, keys.leader, `campaigning for epoch ${epoch}`);
    // A fenced site completing a term it was named for (viaPromote) passes the refusal of fenced sites: its key is
    // its own, nobody else may take it, and its copy is the replica's it was when its own promote began.
    const result = await this.failover.promote(namespace, { force: row.role === 'fenced', actor: 'automatic failover' });
    const pending = result.administratorsPending;
    const line = leadershipLogLine('promoted', pending);
    this.note(namespace, { site: ctx.site, epoch: result.epoch, lease: this.lease ?? '', modRevision: '0' }, `promoted at epoch ${result.epoch}${pending ? '; writes refused until its administrators are restored' : ''}`);
    ctx.metrics.failoverPromotionsTotal.inc({ namespace });
    ctx.log[line.level]({ namespace, epoch: result.epoch, previousPrimary: result.previousPrimary, ...(pending ? { administratorsPending: pending.cause } : {}) }, line.msg);
  }

  /** LeaderGate: a promote at this site takes the key first (see Failover.promote). */
  async acquire(namespace: string, opts: { handoverFrom?: { site: string; epoch: number } }): Promise<{ epoch: number; release: () => Promise<void> }> {
    const { ctx } = this;
    const lease = this.validLease() ?? (await this.renew(), this.validLease());
    if (!lease) throw new FailoverLeaderHeldError(`namespace ${namespace}: this site holds no valid etcd lease (${this.lastError ?? 'etcd unreachable'}); cannot take the leader key`, { namespace });
    const keys = await this.store.read(namespace);
    const leader = keys.leader;
    const handover = opts.handoverFrom;
    const expected = handover && leader && leader.site === handover.site && leader.epoch === handover.epoch ? leader : undefined;
    if (leader && !expected && leader.site !== ctx.site) {
      throw new FailoverLeaderHeldError(`namespace ${namespace}: ${leader.site} holds the leader key at epoch ${leader.epoch} under a live lease`, { namespace, site: leader.site, epoch: leader.epoch });
    }
    const epoch = nextTermEpoch(keys.floor, Math.max(ctx.store.epochs.highest(namespace) ?? 0, ctx.store.roles.require(namespace).epoch));
    // The record comes from the take itself: a second read here that failed (a hung etcd member) threw after the key
    // was taken, and without a `release` the key stayed this site's, renewed, while the promote had failed.
    const record = await this.store.takeTerm(namespace, { site: ctx.site, epoch, lease, expected: expected ?? leader, floorRevision: keys.floorRevision, floor: epoch });
    if (!record) throw new FailoverLeaderHeldError(`namespace ${namespace}: the leader key changed while taking it; check status and retry`, { namespace });
    return {
      epoch,
      // The term is given up before it took any write: the key goes, and the floor goes back to what it was (the
      // floor was written in the same transaction as the key, so its revision is the record's).
      release: async () => {
        await this.store.resign(namespace, record, { value: keys.floor, revision: record.modRevision }).catch(() => false);
      },
    };
  }
}

/** The first retry after a failed renewal starts this long after the failed attempt started; later ones back off. */
export const RENEWAL_RETRY_MS = 250;

/**
 * How long after a renewal attempt that took `tookMs` the next one starts, `failures` attempts having failed in a row.
 * Attempts keep a fixed cadence from their starts (every `intervalMs`); a failed one is retried `RENEWAL_RETRY_MS` after
 * it started (doubling with each further failure, up to the interval), or at once when it took that long. Counted from
 * the end instead, a failed attempt that hung for its whole bound (one interval: a member cut off, or a majority
 * re-electing its leader) pushed the next one two intervals past the last success, onto the cut-off deadline itself, and
 * one slow attempt made every primary of the site step down (an etcd fault run: a member killed while another rejoined).
 */
export function nextRenewalDelay(intervalMs: number, tookMs: number, failures: number): number {
  const every = failures === 0 ? intervalMs : Math.min(intervalMs, RENEWAL_RETRY_MS * 2 ** Math.min(failures - 1, 16));
  return Math.max(0, every - tookMs);
}

/**
 * The log line of a leadership won by a promote or taken back (`resumed`): it says the namespace takes writes only when
 * no administrator restore is pending; while one is, the gateway answers its writes 503 NHR_ERR_GATEWAY_ADMINS_PENDING
 * (the NetHSM would answer 401), so the line says they are refused, at error level. Pure.
 */
export function leadershipLogLine(how: 'promoted' | 'resumed', adminsPending: { cause: string } | undefined): { level: 'warn' | 'error'; msg: string } {
  const won = how === 'resumed' ? 'automatic failover: took the leader key back' : 'automatic failover: promoted (the leader key had expired)';
  if (!adminsPending) return { level: 'warn', msg: how === 'resumed' ? `${won} and takes writes again` : won };
  return { level: 'error', msg: `${won}: primary again, but writes are refused until its administrators are restored (the daemon retries; \`nethsm-replicator status\` shows why)` };
}
