/**
 * What a peer's status tells this site: newer epochs (a promote elsewhere: follow or fence) and stale primaries (a
 * former primary back from a partition: tell it the current epoch so it fences itself quickly).
 */
import { PeerRefusedError, PeerStaleEpochError } from '../errors.js';
import type { PeerClient } from '../peer/client.js';
import type { NamespaceView, PeerNethsm, PeerStatus } from '../peer/messages.js';
import { NETHSM_MEMBER, replicatesFrom, type SiteContext } from './context.js';
import type { Failover } from './failover.js';

/**
 * The last status each peer gave, per site context: `status` asks whether a namespace's primary still says it is
 * primary (src/daemon/status-view.ts). In memory only; refreshed by every probe of the peer.
 */
const lastViews = new WeakMap<SiteContext, Map<string, Map<string, NamespaceView>>>();

/**
 * Per site context and peer: the daemon instance and version it last answered as, and whether it answered as another
 * instance (a restart) since `peerRestarted` last asked. In memory only: after this daemon's own restart a peer first
 * heard from while it counts as down counts as restarted.
 */
const instances = new WeakMap<SiteContext, Map<string, { instance: string | undefined; version: string; restarted: boolean }>>();

/**
 * What a recovered peer's status says about its daemon: `restarted` (another instance than before: a restart, an
 * upgrade from a version that sent none included, or no answer), `same` (the instance it ran as all along: a blip),
 * or `unknown` (it sends no instance: an older nethsm-replicator, which cannot tell a restart from a blip).
 */
export type PeerRestart = 'restarted' | 'same' | 'unknown';

/**
 * Whether `peer` restarted since the last call for it (a first answer on its recovery counts as a restart when it
 * names an instance); resets the answer. A peer daemon that did not restart still streams every change it
 * acknowledged meanwhile; one that did may have let writes reach its NetHSM around it while it was down.
 */
export function peerRestarted(ctx: SiteContext, peer: string): PeerRestart {
  const seen = instances.get(ctx)?.get(peer);
  if (!seen) return 'restarted';
  const restarted = seen.restarted;
  seen.restarted = false;
  if (restarted) return 'restarted';
  return seen.instance === undefined ? 'unknown' : 'same';
}

/**
 * The version `peer` last answered with when its status names no instance (an older nethsm-replicator: its restarts
 * cannot be told from blips); undefined for a peer that names one, or before its first answer.
 */
export function peerWithoutInstance(ctx: SiteContext, peer: string): { version: string } | undefined {
  const seen = instances.get(ctx)?.get(peer);
  return seen && seen.instance === undefined ? { version: seen.version } : undefined;
}

/** The version `peer` last answered with (undefined before its first answer). */
export function peerVersion(ctx: SiteContext, peer: string): string | undefined {
  return instances.get(ctx)?.get(peer)?.version;
}

function noteInstance(ctx: SiteContext, peer: string, instance: string | undefined, version: string): void {
  let m = instances.get(ctx);
  if (!m) instances.set(ctx, (m = new Map()));
  const seen = m.get(peer);
  // First heard from: a restart for all we know if the member counts as down (this answer is its recovery), unless it
  // names no instance: then nothing tells (`unknown`), as at each of its later recoveries.
  if (!seen) m.set(peer, { instance, version, restarted: instance !== undefined && ctx.monitor.get(peer)?.status !== 'ok' });
  else if (seen.instance !== instance) Object.assign(seen, { instance, version, restarted: true });
  else seen.version = version;
}

/** What `peer` last said about `namespace` (undefined before its first answer, or when it did not name it). */
export function lastPeerView(ctx: SiteContext, peer: string, namespace: string): NamespaceView | undefined {
  return lastViews.get(ctx)?.get(peer)?.get(namespace);
}

export async function observePeerStatus(ctx: SiteContext, failover: Failover, peer: PeerClient, status: PeerStatus): Promise<void> {
  let views = lastViews.get(ctx);
  if (!views) lastViews.set(ctx, (views = new Map()));
  views.set(peer.name, new Map(status.namespaces.map((v) => [v.namespace, v])));
  noteInstance(ctx, peer.name, status.instance, status.version);
  let stale = false;
  for (const view of status.namespaces) {
    const row = ctx.store.roles.get(view.namespace);
    if (!row) continue;
    const claimsPrimary = view.role === 'primary' && view.primarySite === peer.name;
    if (view.epoch > row.epoch || (claimsPrimary && view.epoch === row.epoch)) {
      try {
        await failover.observe(view.namespace, { from: peer.name, epoch: view.epoch, primarySite: view.primarySite });
      } catch (err) {
        if (!(err instanceof PeerStaleEpochError)) throw err;
      }
    } else if (claimsPrimary && view.epoch < row.epoch) {
      stale = true;
      ctx.log.warn({ namespace: view.namespace, peer: peer.name, peerEpoch: view.epoch, epoch: row.epoch }, 'a peer still acts as primary at an old epoch; telling it the current one');
      await peer.announceEpoch(view.namespace, { epoch: row.epoch, primarySite: row.primarySite }).catch((err: unknown) => {
        ctx.log.warn({ namespace: view.namespace, peer: peer.name, err }, 'could not tell the peer the current epoch');
      });
    }
  }
  // A peer that still acts as primary at an old epoch is fenced as a member: nothing is pulled from it.
  if (stale) ctx.monitor.markFenced(peer.name);
  else ctx.monitor.clearFenced(peer.name);
}

/** How long a probe waits for a peer's NetHSM report (the peer just answered its status). */
const NETHSM_REPORT_TIMEOUT_MS = 3_000;

/**
 * Per site context and peer: how the peer last reported its own NetHSM, or `unsupported` once it answered 404 (an
 * older nethsm-replicator: not asked again until this daemon restarts). In memory only.
 */
const nethsmReports = new WeakMap<SiteContext, Map<string, PeerNethsm | 'unsupported'>>();

/** What this site answers on `GET /peer/v1/nethsm`: its `nethsm` member as last checked. */
export function nethsmReport(ctx: SiteContext): PeerNethsm {
  const m = ctx.monitor.get(NETHSM_MEMBER);
  const status = !m || m.status === 'fenced' ? 'ok' : m.status;
  return { site: ctx.site, status, errorCode: status === 'ok' ? null : (m?.lastErrorCode ?? null) };
}

/**
 * Asks `peer` how it finds its own NetHSM, when it is the primary of a namespace this site replicates (only then does
 * it matter here: writes to the namespace fail there while it is down). Never throws: a peer that answered its status
 * but not this is shown as not known (no report), not as down.
 */
export async function observePeerNethsm(ctx: SiteContext, peer: PeerClient): Promise<void> {
  let reports = nethsmReports.get(ctx);
  if (!reports) nethsmReports.set(ctx, (reports = new Map()));
  if (reports.get(peer.name) === 'unsupported') return;
  if (!replicatesFrom(ctx, peer.name)) {
    reports.delete(peer.name);
    return;
  }
  try {
    reports.set(peer.name, await peer.nethsm(NETHSM_REPORT_TIMEOUT_MS));
  } catch (err) {
    if (err instanceof PeerRefusedError && err.status === 404) reports.set(peer.name, 'unsupported');
    else reports.delete(peer.name);
  }
}

/** How `peer` last reported its own NetHSM; undefined when not known (not asked, not answered, an older peer). */
export function lastPeerNethsm(ctx: SiteContext, peer: string): PeerNethsm | undefined {
  const r = nethsmReports.get(ctx)?.get(peer);
  return r === 'unsupported' ? undefined : r;
}
