/**
 * The etcd side of automatic failover: one lease per daemon, and per namespace under `<prefix>/ns/<namespace>/`:
 *   leader            {site, epoch} under the holder's lease: the namespace's primary for that epoch;
 *   floor             the highest epoch a term ever took through etcd (never decreases);
 *   candidates/<site> {positionTakenAt} under that site's lease: the copy each reachable site holds.
 * Every change is one etcd transaction with compare-and-set on the revisions it read, so two sites can never both
 * take the key, nor one epoch. The daemon implements no consensus: etcd does (as for Patroni). Every call is bounded
 * (`callTimeoutMs`); a call that fails throws {@link FailoverEtcdUnreachableError}.
 */
import { readFileSync } from 'node:fs';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, noop, retry } from 'cockatiel';
import { Etcd3, EtcdLeaseInvalidError, GRPCDeadlineExceededError, castGrpcError, isRecoverableError, type IOptions, type Lease } from 'etcd3';
import type { EtcdConfig } from '../config/schema.js';
import { FailoverEtcdUnreachableError } from '../errors.js';
import type { Candidate, LeaderRecord } from './leader-policy.js';
import { withDeadline } from '../util/deadline.js';

export interface NamespaceKeys {
  readonly leader: LeaderRecord | undefined;
  readonly floor: number;
  /** The floor key's mod revision ('0' when absent): the compare-and-set token of a new term. */
  readonly floorRevision: string;
  readonly candidates: readonly Candidate[];
}

export interface TakeRequest {
  readonly site: string;
  readonly epoch: number;
  readonly lease: string;
  /** The leader record being replaced (a handover, or this site's own under an old lease); undefined: it must be vacant. */
  readonly expected: LeaderRecord | undefined;
  readonly floorRevision: string;
  /** The floor afterwards: max(floor, epoch). */
  readonly floor: number;
}

export class LeaderStore {
  private readonly client: Etcd3;
  /** One client per endpoint, for renewals only: a renewal goes to every member at once (see {@link renew}). */
  private readonly renewers: Etcd3[];
  private lease: Lease | undefined;
  private leaseId: string | undefined;

  constructor(
    private readonly config: EtcdConfig,
    private readonly callTimeoutMs: number,
  ) {
    const tls = config.tls;
    const base: IOptions = {
      hosts: [...config.endpoints],
      dialTimeout: callTimeoutMs,
      ...(tls
        ? {
            credentials: {
              rootCertificate: readFileSync(tls.caFile),
              ...(tls.certFile && tls.keyFile ? { certChain: readFileSync(tls.certFile), privateKey: readFileSync(tls.keyFile) } : {}),
            },
          }
        : {}),
    };
    this.renewers = config.endpoints.map((e) => new Etcd3({ ...base, hosts: [e], faultHandling: { host: () => noop, global: noop } }));
    this.client = new Etcd3({
      ...base,
      // A member that fails once, or does not answer within the call bound (a stopped process, or one cut off from the
      // majority: it hangs rather than fails), is skipped for a few call bounds (then tried once again), and a failed
      // call is retried on the other members at once. Without the deadline in the breaker, a hung member stayed in the
      // pick, and the reads and takes that picked it (one in three with three members) timed out: promotions failed
      // over and over while a majority was up (the isolated-site fault run). Every call stays bounded by `call`.
      //
      // Each attempt gets a share of the bound (`attemptMs`), and a hung attempt is retried on another member like a
      // failed one: with the whole bound per attempt, the first call that picked a hung member after its breaker
      // half-opened timed out whole (the fault run's isolate-primary: the promote's read did, and the namespace stayed
      // without a primary). A write retried after a hang may have committed the first time: `takeTerm` reads back.
      faultHandling: {
        host: () => circuitBreaker(handleWhen(memberFailed), { halfOpenAfter: 5 * callTimeoutMs, breaker: new ConsecutiveBreaker(1) }),
        global: retry(handleWhen(memberFailed), { maxAttempts: config.endpoints.length }),
      },
      defaultCallOptions: (c) => (c.isStream ? {} : { deadline: Date.now() + attemptMs(callTimeoutMs, config.endpoints.length) }),
    });
  }

  private key(namespace: string, leaf: string): string {
    return `${this.config.prefix}/ns/${namespace}/${leaf}`;
  }

  /** Runs `op` bounded by the call timeout; any failure becomes FailoverEtcdUnreachableError naming `what`. */
  private async call<T>(what: string, op: () => Promise<T>, timeoutMs = this.callTimeoutMs): Promise<T> {
    try {
      return await withDeadline(op(), timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
    } catch (err) {
      if (err instanceof FailoverEtcdUnreachableError) throw err;
      throw new FailoverEtcdUnreachableError(`etcd: ${what} failed: ${err instanceof Error ? err.message : String(err)}`, { operation: what, cause: err });
    }
  }

  /** Grants this daemon's lease (a fresh one). */
  async grant(): Promise<string> {
    this.lease?.release();
    const lease = this.client.lease(Math.round(this.config.leaseTtlMs / 1000), { autoKeepAlive: false });
    lease.on('lost', () => undefined); // a lost lease shows in renew(); the event must not crash the process
    this.lease = lease;
    this.leaseId = undefined;
    this.leaseId = await this.call('lease grant', () => lease.grant());
    return this.leaseId;
  }

  /**
   * Renews the lease once, through every member at once: renewed when any member answers for the majority. Returns
   * false when etcd says the lease has expired; throws when no member answers within the call bound.
   *
   * Why every member: a keep-alive is a stream, which etcd3 neither retries on another member nor bounds, and a member
   * cut off from the majority (or a stopped process) does not fail it, it hangs. Tried one by one, a dead or isolated
   * member picked first (etcd3 picks at random, and a failed member's breaker half-opens every renewal interval) ate
   * the renewal's whole bound, and a few such picks in a row made a primary step down while a majority was up (the
   * witness-lost and isolated-site fault runs).
   */
  async renew(): Promise<boolean> {
    const id = this.leaseId;
    if (!this.lease || id === undefined) return false;
    try {
      await Promise.any(this.renewers.map((c) => this.call('lease renewal', () => keepAliveOnce(c, id, this.callTimeoutMs))));
      return true;
    } catch (err) {
      const errors = err instanceof AggregateError ? (err.errors as unknown[]) : [err];
      if (errors.some((e) => (e as { cause?: unknown }).cause instanceof EtcdLeaseInvalidError)) return false;
      throw errors[0];
    }
  }

  /** Everything under the namespace's prefix, read at one revision (linearizable). */
  async read(namespace: string): Promise<NamespaceKeys> {
    const res = await this.call('read', () => this.client.getAll().prefix(this.key(namespace, '')).exec());
    let leader: LeaderRecord | undefined;
    let floor = 0;
    let floorRevision = '0';
    const candidates: Candidate[] = [];
    for (const kv of res.kvs) {
      const k = kv.key.toString();
      const value = parseJson(kv.value.toString());
      if (k === this.key(namespace, 'leader')) {
        if (value && typeof value.site === 'string' && Number.isSafeInteger(value.epoch)) {
          leader = { site: value.site, epoch: value.epoch as number, lease: String(kv.lease), modRevision: String(kv.mod_revision) };
        }
      } else if (k === this.key(namespace, 'floor')) {
        floor = Number(kv.value.toString()) || 0;
        floorRevision = String(kv.mod_revision);
      } else if (k.startsWith(this.key(namespace, 'candidates/')) && value) {
        const taken = value.positionTakenAt;
        candidates.push({ site: k.slice(this.key(namespace, 'candidates/').length), positionTakenAt: typeof taken === 'number' ? taken : null });
      }
    }
    return { leader, floor, floorRevision, candidates };
  }

  /**
   * Takes the leader key for `req.site` at `req.epoch` under `req.lease`, raising the floor, in one transaction that
   * holds only if the key and the floor are as read. Returns whether it did.
   */
  async take(namespace: string, req: TakeRequest): Promise<boolean> {
    return (await this.takeTerm(namespace, req)) !== undefined;
  }

  /**
   * As {@link take}, returning the leader record written (its mod revision is the transaction's revision), or
   * undefined when the key or the floor changed. When the transaction's outcome is unknown (no answer in time, or a
   * retry whose compare failed because the first attempt had committed), reads the key back: the record under this
   * lease at this site and epoch can only be this call's. Throws only when neither the take nor the read answered.
   */
  async takeTerm(namespace: string, req: TakeRequest): Promise<LeaderRecord | undefined> {
    let outcome: { succeeded: boolean; revision: string } | undefined;
    let error: unknown;
    try {
      outcome = await this.takeOnce(namespace, req);
    } catch (err) {
      error = err;
    }
    if (outcome?.succeeded) return { site: req.site, epoch: req.epoch, lease: req.lease, modRevision: outcome.revision };
    const now = await this.read(namespace).catch((err: unknown) => {
      throw error ?? err;
    });
    const l = now.leader;
    return l && l.site === req.site && l.epoch === req.epoch && l.lease === req.lease ? l : undefined;
  }

  private async takeOnce(namespace: string, req: TakeRequest): Promise<{ succeeded: boolean; revision: string }> {
    const leaderKey = this.key(namespace, 'leader');
    const floorKey = this.key(namespace, 'floor');
    const res = await this.call('take leader key', () =>
      this.client
        .if(leaderKey, 'Mod', '==', req.expected ? req.expected.modRevision : 0)
        .and(floorKey, 'Mod', '==', req.floorRevision)
        .then(
          this.client.put(leaderKey).value(JSON.stringify({ site: req.site, epoch: req.epoch })).lease(req.lease),
          this.client.put(floorKey).value(String(req.floor)),
        )
        .commit(),
    );
    return { succeeded: res.succeeded, revision: String(res.header.revision) };
  }

  /**
   * Deletes the leader key if it is still `record` (a site giving it up after a failed promote). With `floor`, also
   * puts the epoch floor back to `floor.value` in the same transaction, if the floor is still the one this term wrote
   * (`floor.revision`): the aborted term took no write, and leaving the floor raised would forbid a stepped-down
   * primary to resume (it may only when no other term began) while the site that aborted refuses to promote (its last
   * sync failed): no primary at all (the fault suite's isolate-primary).
   */
  async resign(namespace: string, record: LeaderRecord, floor?: { value: number; revision: string }): Promise<boolean> {
    const leaderKey = this.key(namespace, 'leader');
    const floorKey = this.key(namespace, 'floor');
    const res = await this.call('resign', () => {
      const txn = this.client.if(leaderKey, 'Mod', '==', record.modRevision);
      if (!floor) return txn.then(this.client.delete().key(leaderKey)).commit();
      return txn.and(floorKey, 'Mod', '==', floor.revision).then(this.client.delete().key(leaderKey), this.client.put(floorKey).value(String(floor.value))).commit();
    });
    return res.succeeded;
  }

  /** Publishes this site's position under its lease (gone when the site stops renewing: then it is not reachable). */
  async publishCandidate(namespace: string, site: string, positionTakenAt: number | null, lease: string): Promise<void> {
    await this.call('publish position', () => this.client.put(this.key(namespace, `candidates/${site}`)).value(JSON.stringify({ positionTakenAt })).lease(lease).exec());
  }

  /** Revokes the lease (a clean stop: the keys it holds go at once) and closes the client. Never throws. */
  async close(revoke: boolean): Promise<void> {
    if (revoke && this.lease && this.leaseId !== undefined) {
      const lease = this.lease;
      await this.call('lease revoke', () => lease.revoke()).catch(() => undefined);
    } else this.lease?.release();
    this.client.close();
    for (const c of this.renewers) c.close();
  }
}

/** One keep-alive of lease `id` through `client`'s only member; the stream is cancelled after `timeoutMs`. */
async function keepAliveOnce(client: Etcd3, id: string, timeoutMs: number): Promise<void> {
  const stream = await client.leaseClient.leaseKeepAlive();
  try {
    const answer = new Promise<{ TTL: string }>((resolve, reject) => {
      stream.on('data', resolve);
      stream.on('error', (e) => reject(castGrpcError(e)));
      stream.write({ ID: id });
    });
    const res = await withDeadline(answer, timeoutMs, () => new Error(`no answer within ${timeoutMs} ms`));
    if (String(res.TTL) === '0') throw new EtcdLeaseInvalidError(id);
  } finally {
    stream.cancel();
  }
}

/** One attempt's deadline: the call's bound shared by the members it may try (at least 200 ms). */
function attemptMs(callTimeoutMs: number, members: number): number {
  return Math.max(200, Math.floor(callTimeoutMs / Math.max(1, members)));
}

/** A member failed (unreachable) or did not answer within the call's deadline: skip it for a while. */
function memberFailed(err: Error): boolean {
  return isRecoverableError(err) || err instanceof GRPCDeadlineExceededError;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
