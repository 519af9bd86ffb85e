/**
 * Member health, modelled on Luna HA auto-recovery: each member (this site's NetHSM, each peer daemon) is `ok`,
 * `unreachable` (failing; retried every `retryIntervalMs` until `maxAttempts` is spent), `locked` or
 * `not-operational` (a NetHSM that answers but cannot work: Locked, or Unprovisioned/Failed; retried like
 * `unreachable`), `recovering` (answered again; the owner is resuming its work) or `fenced` (set by role logic).
 * Other parts report the outcome of their real calls, so a member's status follows actual use, not only the probe.
 * Long-lived part with idempotent start()/close().
 */
import { isRetryable, NetHsmLockedError, NetHsmNotOperationalError, NhrError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';

export type MemberStatus = 'ok' | 'unreachable' | 'locked' | 'not-operational' | 'recovering' | 'fenced';

/** The statuses of a member that is failing its checks: no work is attempted against it; it is retried. */
export type DownStatus = 'unreachable' | 'locked' | 'not-operational';

export function isDown(status: MemberStatus): status is DownStatus {
  return status === 'unreachable' || status === 'locked' || status === 'not-operational';
}

/** What a failed check says about the member: a NetHSM that answered with its state is not "unreachable". */
function downStatusOf(err: unknown): DownStatus {
  if (err instanceof NetHsmLockedError) return 'locked';
  if (err instanceof NetHsmNotOperationalError) return 'not-operational';
  return 'unreachable';
}

export interface MemberState {
  name: string;
  status: MemberStatus;
  consecutiveFailures: number;
  /** Recovery attempts made since the member went unreachable. */
  attempts: number;
  /** True once `maxAttempts` recovery attempts failed: no more automatic retries until `retryNow`. */
  gaveUp: boolean;
  lastErrorCode: string | null;
  lastError: string | null;
  lastOkAt: number | null;
  nextRetryAt: number | null;
}

export interface Member {
  name: string;
  /** Resolves when the member answers; throws otherwise. */
  probe(): Promise<void>;
}

export interface MemberMonitorOptions {
  members: Member[];
  retryIntervalMs: number;
  /**
   * How often members that are not failing are checked (default: retryIntervalMs). Periodic checks are how a site
   * learns what happened while a link was down, e.g. a newer epoch (the probe of a peer reads its status).
   */
  probeIntervalMs?: number;
  /** Recovery attempts before giving up; Infinity for unlimited (the default in config). */
  maxAttempts: number;
  /** Called after every status change (persist it, update metrics). */
  onChange?: (state: Readonly<MemberState>) => void;
  /** Called when a member that was down (unreachable, locked, …) answers again: resume its work, then call `markOk`. */
  onRecovered?: (name: string) => void;
  /** Initial states (from the state store) so a restart resumes counts. */
  initial?: MemberState[];
  logger?: Logger;
  now?: () => number;
}

export class MemberMonitor {
  private readonly states = new Map<string, MemberState>();
  private readonly members = new Map<string, Member>();
  private timers = new Map<string, NodeJS.Timeout>();
  /** Members whose resume failed (`resumeFailed`): when it runs again. Apart from `timers`: they are still probed. */
  private readonly resumeTimers = new Map<string, NodeJS.Timeout>();
  private readonly probing = new Set<string>();
  private periodic: NodeJS.Timeout | undefined;
  private started = false;
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(private readonly options: MemberMonitorOptions) {
    this.log = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    for (const m of options.members) {
      this.members.set(m.name, m);
      const prior = options.initial?.find((s) => s.name === m.name);
      this.states.set(m.name, prior ? { ...prior } : fresh(m.name));
    }
  }

  /** Probes every member once, then keeps retrying the failing ones. Idempotent. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await Promise.all([...this.members.keys()].map((name) => this.probe(name)));
    // Members being retried are probed by their retry timer; the others (and fenced ones) on this beat.
    this.periodic = setInterval(() => {
      for (const [name, s] of this.states) if (!this.timers.has(name) && !s.gaveUp) void this.probe(name);
    }, this.options.probeIntervalMs ?? this.options.retryIntervalMs);
    this.periodic.unref();
  }

  close(): Promise<void> {
    this.started = false;
    if (this.periodic) clearInterval(this.periodic);
    this.periodic = undefined;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const t of this.resumeTimers.values()) clearTimeout(t);
    this.resumeTimers.clear();
    return Promise.resolve();
  }

  get(name: string): Readonly<MemberState> | undefined {
    return this.states.get(name);
  }

  all(): Readonly<MemberState>[] {
    return [...this.states.values()].map((s) => ({ ...s }));
  }

  /** Whether work should be attempted against the member now (not unreachable, not fenced). */
  available(name: string): boolean {
    const s = this.states.get(name);
    return !!s && (s.status === 'ok' || s.status === 'recovering');
  }

  /** A real call to the member succeeded. */
  reportSuccess(name: string): void {
    const s = this.states.get(name);
    if (!s) return;
    if (isDown(s.status)) return this.recovered(s);
    if (s.consecutiveFailures > 0 || s.lastOkAt === null) this.update(s, { consecutiveFailures: 0, lastOkAt: this.now() });
    else s.lastOkAt = this.now();
  }

  /** A real call to the member failed. Only retryable (connectivity) failures make it unreachable. */
  reportFailure(name: string, err: unknown): void {
    const s = this.states.get(name);
    if (!s || !isRetryable(err)) return;
    this.failed(s, err);
  }

  /** The owner finished resuming a recovered member. */
  markOk(name: string): void {
    const s = this.states.get(name);
    this.clearResume(name);
    if (s && s.status === 'recovering') this.update(s, { status: 'ok', nextRetryAt: null });
  }

  /**
   * The owner could not finish resuming a recovered member (its `onRecovered` work failed: a snapshot sync the
   * recovery owes, say). The member stays `recovering` with the failure as its last error, and its work is run again
   * (`onRecovered` once more) every `retryIntervalMs` until the owner calls `markOk`, or the member goes down (its
   * next recovery runs it). Before, it stayed `recovering` for good: nothing ran that work again, and `status` showed
   * the member RECOVERING until its next outage, even once a scheduled sync had done the work.
   */
  resumeFailed(name: string, err: unknown): void {
    const s = this.states.get(name);
    if (!this.started || !s || s.status !== 'recovering' || this.resumeTimers.has(name)) return;
    const code = err instanceof NhrError ? err.code : ((err as { code?: string })?.code ?? 'UNKNOWN');
    const message = err instanceof Error ? err.message : String(err);
    this.update(s, { lastErrorCode: code, lastError: message.slice(0, 500), nextRetryAt: this.now() + this.options.retryIntervalMs });
    const t = setTimeout(() => {
      this.resumeTimers.delete(name);
      if (!this.started || s.status !== 'recovering') return;
      this.update(s, { nextRetryAt: null });
      this.options.onRecovered?.(name);
    }, this.options.retryIntervalMs);
    t.unref();
    this.resumeTimers.set(name, t);
  }

  /** The member acts on a stale view (a peer claiming primary at an old epoch): do not pull from it. */
  markFenced(name: string): void {
    const s = this.states.get(name);
    if (s && s.status !== 'fenced') this.update(s, { status: 'fenced' });
  }

  /** A fenced member no longer acts on a stale view. */
  clearFenced(name: string): void {
    const s = this.states.get(name);
    if (s && s.status === 'fenced') this.update(s, { status: 'ok' });
  }

  /**
   * Checks the member now, outside its schedule (a real call suggested its state changed, e.g. a NetHSM answering 412:
   * not Operational). A no-op while a check of it runs, or for a member that gave up (the operator's `retryNow` resumes
   * those). Counts nothing by itself: the check's outcome is recorded as any other.
   */
  async checkNow(name: string): Promise<void> {
    const s = this.states.get(name);
    if (!this.started || !s || s.gaveUp) return;
    await this.probe(name);
  }

  /** Operator's manual recovery: reset the attempt count and probe now. */
  async retryNow(name: string): Promise<void> {
    const s = this.states.get(name);
    if (!s) return;
    this.update(s, { attempts: 0, gaveUp: false });
    await this.probe(name);
  }

  private async probe(name: string): Promise<void> {
    const member = this.members.get(name);
    const s = this.states.get(name);
    if (!member || !s || this.probing.has(name)) return;
    this.probing.add(name);
    try {
      await member.probe();
      if (isDown(s.status)) this.recovered(s);
      else this.update(s, { consecutiveFailures: 0, lastOkAt: this.now(), status: s.status === 'fenced' ? 'fenced' : s.status });
    } catch (err) {
      this.failed(s, err);
    } finally {
      this.probing.delete(name);
    }
  }

  private failed(s: MemberState, err: unknown): void {
    const before = s.status;
    const wasDown = isDown(before);
    const attempts = wasDown ? s.attempts + 1 : 0;
    const gaveUp = attempts >= this.options.maxAttempts;
    const code = err instanceof NhrError ? err.code : ((err as { code?: string })?.code ?? 'UNKNOWN');
    const message = err instanceof Error ? err.message : String(err);
    this.update(s, {
      status: s.status === 'fenced' ? 'fenced' : downStatusOf(err),
      consecutiveFailures: s.consecutiveFailures + 1,
      attempts,
      gaveUp,
      lastErrorCode: code,
      lastError: message.slice(0, 500),
      nextRetryAt: gaveUp ? null : this.now() + this.options.retryIntervalMs,
    });
    // Logged when the member goes down and when the reason changes (unreachable → locked, …), not at every retry.
    if (s.status !== before || !wasDown) this.log.warn({ member: s.name, code, error: message }, `member ${s.status === 'fenced' ? 'unreachable' : s.status}`);
    if (gaveUp) this.log.error({ member: s.name, attempts }, 'member recovery attempts exhausted; waiting for an operator');
    else this.schedule(s.name);
  }

  private recovered(s: MemberState): void {
    this.log.info({ member: s.name, after: s.consecutiveFailures }, 'member recovered');
    // This recovery runs the owner's work itself: a retry of an earlier one's is not run beside it.
    this.clearResume(s.name);
    this.update(s, { status: 'recovering', consecutiveFailures: 0, attempts: 0, gaveUp: false, lastOkAt: this.now(), nextRetryAt: null });
    const t = this.timers.get(s.name);
    if (t) clearTimeout(t);
    this.timers.delete(s.name);
    this.options.onRecovered?.(s.name);
  }

  private clearResume(name: string): void {
    const t = this.resumeTimers.get(name);
    if (t) clearTimeout(t);
    this.resumeTimers.delete(name);
  }

  private schedule(name: string): void {
    if (!this.started || this.timers.has(name)) return;
    const t = setTimeout(() => {
      this.timers.delete(name);
      void this.probe(name);
    }, this.options.retryIntervalMs);
    t.unref();
    this.timers.set(name, t);
  }

  private update(s: MemberState, patch: Partial<MemberState>): void {
    Object.assign(s, patch);
    this.options.onChange?.({ ...s });
  }
}

function fresh(name: string): MemberState {
  return { name, status: 'ok', consecutiveFailures: 0, attempts: 0, gaveUp: false, lastErrorCode: null, lastError: null, lastOkAt: null, nextRetryAt: null };
}
