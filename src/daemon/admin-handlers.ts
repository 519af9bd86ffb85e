/**
 * What the daemon does for the operator's CLI (admin API on the unix socket).
 */
import type { AdminHandlers } from '../admin/server.js';
import type { SiteContext } from './context.js';
import type { Failover } from './failover.js';
import { ackQuarantine, listQuarantine } from './quarantine.js';
import { buildStatus, type StatusExtras } from './status-view.js';
import type { NamespaceSync } from './sync.js';

export function createAdminHandlers(ctx: SiteContext, failover: Failover, syncer: NamespaceSync, extras: StatusExtras): AdminHandlers {
  const setPaused = (namespace: string, paused: boolean, actor: string) => {
    const row = ctx.store.roles.require(namespace);
    ctx.store.transaction(() => {
      ctx.store.roles.setPaused(namespace, paused);
      ctx.store.audit.append({ actor, action: paused ? 'pause' : 'resume', namespace, fromEpoch: row.epoch, toEpoch: row.epoch });
    });
    ctx.metrics.namespacePaused.set({ namespace }, paused ? 1 : 0);
    // Pausing makes every device step's fencing token for the namespace stale (docs/concurrency.md); the stream stops
    // at once instead of at its next change.
    ctx.roleChanged?.(namespace);
    ctx.log.info({ namespace, actor, paused }, paused ? 'namespace paused' : 'namespace resumed');
    return { namespace, paused };
  };
  return {
    status: async () => buildStatus(ctx, syncer, extras),
    sync: (namespace, req) => {
      const onExisting = (req as { onExisting?: 'refuse' | 'remove' }).onExisting;
      return syncer.sync(namespace, { actor: req.actor, manual: true, force: req.force === true, ...(onExisting ? { onExisting } : {}) });
    },
    promote: (namespace, req) => failover.promote(namespace, { force: req.force, actor: req.actor }),
    demote: (namespace, req) => failover.demote(namespace, { actor: req.actor, ...(req.to ? { to: req.to } : {}) }),
    pause: async (namespace, req) => setPaused(namespace, true, req.actor),
    resume: async (namespace, req) => setPaused(namespace, false, req.actor),
    restoreAdmins: async (namespace, req) => {
      if (req.forget) return failover.admins.forget(namespace, req.actor);
      ctx.log.info({ namespace, actor: req.actor }, 'administrator restore asked for now by the operator');
      return failover.admins.retryNow(namespace);
    },
    quarantineList: () => listQuarantine(ctx),
    quarantineAck: (req) => ackQuarantine(ctx, req.file, req.actor),
  };
}
