/**
 * What this site tells another site's gateway it can serve (`GET /peer/v1/serving`, docs/gateway.md "Serving from a
 * peer"): whether its NetHSM serves now, and per namespace its role and how old its copy is.
 */
import type { ServingView } from '../peer/messages.js';
import type { StreamService } from '../stream/service.js';
import type { SiteContext } from './context.js';

export interface ServingViewInput {
  ctx: SiteContext;
  stream: StreamService;
  /** This site's NetHSM serves its gateway now (healthy, and the gateway is not serving from peers itself). */
  nethsmServes: boolean;
  gateway: boolean;
  now?: number;
}

export function servingView(input: ServingViewInput): ServingView {
  const { ctx, stream } = input;
  const now = input.now ?? Date.now();
  return {
    site: ctx.site,
    nethsm: input.nethsmServes ? 'ok' : 'down',
    gateway: input.gateway,
    namespaces: ctx.store.roles.list().map((r) => ({
      namespace: r.namespace,
      role: r.role,
      epoch: r.epoch,
      primarySite: r.primarySite,
      lagSeconds: r.role === 'replica' && r.primarySite !== ctx.site ? replicaLag(ctx, stream, r.namespace, r.primarySite, now) : null,
    })),
  };
}

/**
 * How far the replica's copy is behind its primary, in seconds: when the change stream's last heartbeat said it was
 * caught up, the heartbeat's age (it was current then; an idle namespace with a live stream is 0–5 s behind, not as old
 * as its last change); otherwise the age of the position applied (the primary's time of the last snapshot or change).
 * Null when never synced.
 */
function replicaLag(ctx: SiteContext, stream: StreamService, namespace: string, primary: string, now: number): number | null {
  const s = stream.status(namespace);
  if (s !== null && s.lastHeartbeatAt !== null && s.changesBehind === 0) return Math.max(0, (now - s.lastHeartbeatAt) / 1000);
  const taken = ctx.store.positions.get(namespace, primary)?.positionTakenAt;
  return taken === undefined ? null : Math.max(0, (now - taken) / 1000);
}
