/**
 * What this daemon answers its peers (the peer API's handlers). The peer's identity is already verified by mutual TLS.
 */
import { createReadStream } from 'node:fs';
import { existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { RoleNotPrimaryError } from '../errors.js';
import type { PeerHandlers } from '../peer/server.js';
import type { NamespaceView } from '../peer/messages.js';
import { sealPassphraseProof } from '../peer/passphrase-check.js';
import { PRODUCTION_SCRYPT } from '../backup/format.js';
import { readInventory } from '../namespaces/inventory.js';
import { itemLines, rangeDigestLines } from '../namespaces/inventory-ranges.js';
import { unlimited, type Limiter } from '../util/rate-limiter.js';
import { streamSnapshot } from '../replicator/snapshot-source.js';
import { InventoryGuard } from './inventory-guard.js';
import { removeFiles } from '../replicator/workdir.js';
import { VERSION } from '../version.js';
import type { StreamService } from '../stream/service.js';
import type { SiteContext } from './context.js';
import type { Failover } from './failover.js';
import type { NamespaceSync } from './sync.js';

export function namespaceViews(ctx: SiteContext): NamespaceView[] {
  return ctx.store.roles.list().map((r) => ({ namespace: r.namespace, role: r.role, epoch: r.epoch, primarySite: r.primarySite }));
}

/**
 * `limiter` paces the device reads of the inventories this site serves (shared with its own anti-entropy passes, so
 * the device sees at most `antiEntropy.maxRequestsPerSecond` of them in all). The daemon's stop (`syncer.stopping`)
 * cuts the device backups taken for a peer (a snapshot's, init-replica's): only read, so nothing is lost, and the
 * peer hears NHR_ERR_DAEMON_STOPPING or a cut transfer and asks again after the start.
 */
export function createPeerHandlers(ctx: SiteContext, failover: Failover, syncer: NamespaceSync, stream: StreamService, limiter: Limiter = unlimited()): PeerHandlers {
  const stopping = syncer.stopping;
  const cut = (err: unknown) => stopping.aborted && err === stopping.reason;
  return {
    transportKey: () => stream.publicTransportKey(),

    // The snapshots' KDF strength: the check tells a caller no more than a snapshot would.
    replicationPassphraseProof: (peer, challenge) =>
      sealPassphraseProof(ctx.replicationPassphrase, challenge, { sealer: ctx.site, asker: peer }, ctx.snapshotScrypt ?? PRODUCTION_SCRYPT),

    inventory: async (_peer, namespace) => {
      assertPrimaryHere(ctx, namespace);
      const guard = guardOf(ctx, namespace);
      const inv = await readInventory(stream.client(namespace), namespace);
      guard.check();
      return inv;
    },

    inventoryRanges: async (peer, namespace, rangeSize, signal) => {
      assertPrimaryHere(ctx, namespace);
      const guard = guardOf(ctx, namespace);
      ctx.log.info({ namespace, peer, rangeSize }, 'serving inventory ranges');
      const certs = { repo: ctx.store.keyCerts, scrubPasses: ctx.config.antiEntropy.certScrubPasses };
      return guard.lines(rangeDigestLines(stream.client(namespace), namespace, rangeSize, { limiter, signal, certs }));
    },

    inventoryItems: async (peer, namespace, ranges, signal) => {
      assertPrimaryHere(ctx, namespace);
      const guard = guardOf(ctx, namespace);
      ctx.log.info({ namespace, peer, ranges: ranges.length }, 'serving inventory items');
      return guard.lines(itemLines(stream.client(namespace), namespace, ranges, { limiter, signal }));
    },

    certificate: async (_peer, namespace, keyId) => {
      assertPrimaryHere(ctx, namespace);
      const guard = guardOf(ctx, namespace);
      const cert = await stream.client(namespace).getCert(keyId);
      guard.check();
      return cert;
    },

    changes: async (peer, namespace, after, signal, log) => stream.feed.open(peer, namespace, after, signal, log),

    status: async () => ({ site: ctx.site, version: VERSION, instance: ctx.instance, namespaces: namespaceViews(ctx) }),

    snapshot: async (peer, namespace) => {
      const row = ctx.store.roles.require(namespace);
      if (row.role === 'primary' && row.primarySite === ctx.site) {
        // The head is read before the backup: every change numbered up to it is already on the device.
        // Streamed as the extract writes it (the server answers once the first bytes exist); a failure later cuts the
        // transfer, so the peer never takes a truncated snapshot for a whole one.
        const snap = await streamSnapshot({ ...failover.snapshotDeps(), signal: stopping }, namespace, row.epoch).catch((err: unknown) => {
          if (cut(err)) ctx.log.info({ namespace, peer }, "device backup for a peer's snapshot cut by the stop; the peer asks again after the start");
          throw err;
        });
        ctx.log.info({ namespace, peer, streamed: true }, 'serving snapshot');
        snap.done.then(
          (s) => ctx.log.info({ namespace, peer, entries: s.entries, bytes: s.bytes }, 'snapshot taken'),
          (err: unknown) =>
            cut(err)
              ? ctx.log.info({ namespace, peer }, "device backup for a peer's snapshot cut by the stop; the transfer was cut")
              : ctx.log.warn({ namespace, peer, err }, 'snapshot failed while streamed; the transfer was cut'),
        );
        return { epoch: row.epoch, site: ctx.site, body: snap.body };
      }
      // A demoted primary serves its final snapshot to its successor until the handover completes.
      const handoff = ctx.work.handoffOf(namespace);
      if (row.primarySite === ctx.site && existsSync(handoff)) {
        return { epoch: row.epoch, site: ctx.site, body: createReadStream(handoff) };
      }
      throw new RoleNotPrimaryError(`namespace ${namespace} is ${row.role} here at epoch ${row.epoch}; its primary is ${row.primarySite}`, {
        namespace,
        epoch: row.epoch,
        site: row.primarySite,
      });
    },

    announceEpoch: async (peer, namespace, a) => {
      const state = await failover.observe(namespace, { from: peer, epoch: a.epoch, primarySite: a.primarySite });
      return { accepted: true, view: { namespace, role: state.role, epoch: state.epoch, primarySite: state.primarySite } };
    },

    handoff: (peer, namespace, req) => failover.acceptHandoff(peer, namespace, req.fromEpoch),

    requestSync: async (peer, namespace) => {
      ctx.store.roles.require(namespace);
      void syncer.sync(namespace, { actor: `peer:${peer}` }).catch(() => undefined);
      return { started: true };
    },

    deviceBackup: async (peer) => {
      const file = ctx.work.temp('device-backup-for-peer');
      await ctx.device.backupForReading(file, { signal: stopping }).catch((err: unknown) => {
        if (cut(err)) ctx.log.info({ peer }, 'device backup for a peer (init-replica) cut by the stop');
        throw err;
      });
      ctx.log.info({ peer }, 'serving a device backup to a peer (init-replica)');
      return streamThenRemove(file);
    },
  };
}

/** Anti-entropy compares against the primary's copy only. */
function assertPrimaryHere(ctx: SiteContext, namespace: string): void {
  const row = ctx.store.roles.require(namespace);
  if (row.role !== 'primary' || row.primarySite !== ctx.site) {
    throw new RoleNotPrimaryError(`namespace ${namespace} is ${row.role} here at epoch ${row.epoch}; its primary is ${row.primarySite}`, {
      namespace,
      epoch: row.epoch,
      site: row.primarySite,
    });
  }
}

/**
 * Every inventory answer (and certificate) anti-entropy asks of this primary is guarded: none while a restore here left
 * erased writes of the namespace to re-apply, and none whose reads may have overlapped such a restore.
 */
function guardOf(ctx: SiteContext, namespace: string): InventoryGuard {
  return InventoryGuard.open(ctx.raceReplayer, ctx.store, namespace, ctx.site);
}

/** Streams a work file and removes it once sent (or when the transfer fails). */
function streamThenRemove(file: string): Readable {
  const s = createReadStream(file);
  s.once('close', () => void removeFiles(file));
  return s;
}
