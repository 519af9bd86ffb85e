/**
 * Scheduled and manual sync of one namespace at this site. At a replica (or a fenced site resyncing): fetch the
 * primary's snapshot over the peer API and apply it. At the primary: ask every peer to pull now. One sync per
 * namespace at a time; a sync that finds one running joins it.
 */
import { existsSync } from 'node:fs';
import { isRetryable, NhrError, PeerRefusedError, SyncStaleSnapshotError, NamespaceUnknownError } from '../errors.js';
import { syncFailureReason } from '../metrics/metrics.js';
import { applySnapshot, type ApplyResult } from '../replicator/snapshot-apply.js';
import { removeFiles } from '../replicator/workdir.js';
import type { EpochClaim } from '../roles/role-machine.js';
import type { SiteContext } from './context.js';

export interface SyncRequest {
  actor: string;
  /** First sync only: what to do when the device already holds the namespace. */
  onExisting?: 'refuse' | 'remove';
}

export type SyncResult =
  | { namespace: string; outcome: 'applied'; epoch: number; from: string; takenAt: string; durationSeconds: number; remerges: number; strippedAdministrators: string[]; savedExisting?: string }
  | { namespace: string; outcome: 'requested'; peers: { name: string; ok: boolean; error?: string }[] }
  | { namespace: string; outcome: 'skipped'; reason: string };

export class NamespaceSync {
  private readonly running = new Map<string, Promise<SyncResult>>();

  constructor(
    private readonly ctx: SiteContext,
    /** Called when a snapshot reveals an epoch newer than this site's (follow or fence). */
    private readonly observe: (namespace: string, claim: EpochClaim) => Promise<void>,
  ) {}

  isBusy(namespace: string): boolean {
    return this.running.has(namespace);
  }

  /** Waits for every running sync (shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  /** Runs (or joins) a sync of `namespace`. Throws NhrErrors; records the outcome in state and metrics either way. */
  sync(namespace: string, req: SyncRequest): Promise<SyncResult> {
    const current = this.running.get(namespace);
    if (current) return current;
    const p = this.run(namespace, req).finally(() => this.running.delete(namespace));
    this.running.set(namespace, p);
    return p;
  }

  private async run(namespace: string, req: SyncRequest): Promise<SyncResult> {
    const row = this.ctx.store.roles.get(namespace);
    if (!row) throw new NamespaceUnknownError(`namespace ${namespace} is not replicated by this site`, { namespace });
    if (row.paused) return { namespace, outcome: 'skipped', reason: 'paused' };
    if (row.role === 'primary') return this.requestPeers(namespace);
    if (row.primarySite === this.ctx.site) return { namespace, outcome: 'skipped', reason: 'handing over (demoted, waiting for the new primary)' };
    return this.pull(namespace, row.primarySite, row.epoch, req);
  }

  private async requestPeers(namespace: string): Promise<SyncResult> {
    const peers = await Promise.all(
      [...this.ctx.peers.values()].map(async (p) => {
        try {
          await p.requestSync(namespace);
          return { name: p.name, ok: true };
        } catch (err) {
          return { name: p.name, ok: false, error: err instanceof Error ? err.message : String(err) };
        }
      }),
    );
    return { namespace, outcome: 'requested', peers };
  }

  private async pull(namespace: string, primary: string, localEpoch: number, req: SyncRequest): Promise<SyncResult> {
    const { ctx } = this;
    const peer = ctx.peers.get(primary);
    if (!peer) throw new NamespaceUnknownError(`namespace ${namespace}'s primary ${primary} is not a configured peer`, { namespace, site: primary });
    return ctx.applyLock(namespace).run(() => this.pullLocked(peer, namespace, primary, localEpoch, req));
  }

  private async pullLocked(peer: NonNullable<ReturnType<SiteContext['peers']['get']>>, namespace: string, primary: string, localEpoch: number, req: SyncRequest): Promise<SyncResult> {
    const { ctx } = this;
    const started = Date.now();
    const file = ctx.work.temp(`incoming-${namespace}`);
    ctx.metrics.syncInProgress.set({ namespace }, 1);
    try {
      const fetched = await peer.fetchSnapshot(namespace, file);
      ctx.monitor.reportSuccess(primary);
      if (fetched.epoch < localEpoch) {
        throw new SyncStaleSnapshotError(`${primary} served namespace ${namespace} at epoch ${fetched.epoch}; this site holds epoch ${localEpoch}`, {
          namespace,
          site: primary,
          epoch: localEpoch,
        });
      }
      if (fetched.epoch > localEpoch) await this.observe(namespace, { from: primary, epoch: fetched.epoch, primarySite: primary });
      const result = await applySnapshot(
        {
          device: ctx.device,
          work: ctx.work,
          deviceOpen: ctx.deviceOpen,
          snapshotOpen: ctx.snapshotOpen,
          replicationUserId: ctx.replicationUserIds.get(namespace) ?? '',
          ...(ctx.gate ? { gate: ctx.gate } : {}),
          logger: ctx.log,
          onForeignLoss: (n) => ctx.metrics.restoreForeignEntriesLostTotal.inc({ namespace }, n),
        },
        namespace,
        file,
        { onExisting: this.existingPolicy(namespace, req) },
      );
      return this.recordOk(namespace, primary, result, started);
    } catch (err) {
      this.recordFailure(namespace, primary, err, started);
      throw err;
    } finally {
      ctx.metrics.syncInProgress.set({ namespace }, 0);
      await removeFiles(file);
    }
  }

  /**
   * First sync of a namespace this site never held: refuse a copy the device already has (unknown origin), unless
   * init-replica put it there (bootstrap). A site that synced it before, or was its primary, knows where it came from.
   */
  private existingPolicy(namespace: string, req: SyncRequest): 'refuse' | 'remove' | 'adopt' | undefined {
    const { store } = this.ctx;
    const synced = store.positions.forNamespace(namespace).some((p) => p.lastOkAt !== undefined);
    const wasPrimary = store.audit.list({ namespace, limit: 100_000 }).some((e) => e.toRole === 'primary');
    if (synced || wasPrimary || existsSync(this.ctx.work.snapshotOf(namespace))) return undefined;
    // `refuse` (the default) refuses copies of unknown origin only; init-replica's copy is known.
    if (req.onExisting === 'remove') return 'remove';
    return this.ctx.work.isBootstrapped(namespace) ? 'adopt' : 'refuse';
  }

  private recordOk(namespace: string, primary: string, r: ApplyResult, started: number): SyncResult {
    const { ctx } = this;
    const durationMs = Date.now() - started;
    // Also forgets applied records the snapshot's position does not cover (it may be behind the stream, or in a new log).
    ctx.store.positions.recordSyncOk(namespace, primary, {
      epoch: r.meta.epoch,
      seq: r.meta.seq,
      ...(r.meta.log !== undefined ? { log: r.meta.log } : {}),
      takenAt: r.meta.takenAt,
      durationMs,
    });
    ctx.metrics.observeSync(namespace, 'success', durationMs / 1000);
    ctx.metrics.restoresTotal.inc({ namespace, outcome: 'success' });
    ctx.metrics.setReplicaDataTime(namespace, r.meta.takenAt / 1000);
    ctx.log.info({ namespace, from: primary, epoch: r.meta.epoch, durationMs, remerges: r.remerges, stripped: r.strippedAdministrators.length }, 'namespace synced');
    return {
      namespace,
      outcome: 'applied',
      epoch: r.meta.epoch,
      from: primary,
      takenAt: new Date(r.meta.takenAt).toISOString(),
      durationSeconds: durationMs / 1000,
      remerges: r.remerges,
      strippedAdministrators: r.strippedAdministrators,
      ...(r.savedExisting ? { savedExisting: r.savedExisting } : {}),
    };
  }

  private recordFailure(namespace: string, primary: string, err: unknown, started: number): void {
    const { ctx } = this;
    const durationMs = Date.now() - started;
    const code = err instanceof NhrError ? err.code : 'NHR_ERR_INTERNAL';
    ctx.store.positions.recordSyncFailed(namespace, primary, { errorCode: code, durationMs });
    ctx.metrics.observeSync(namespace, 'failure', durationMs / 1000, syncFailureReason(err));
    if (isRetryable(err) && !(err instanceof PeerRefusedError)) ctx.monitor.reportFailure(primary, err);
    ctx.log.warn({ namespace, from: primary, err, durationMs }, 'namespace sync failed');
  }
}
