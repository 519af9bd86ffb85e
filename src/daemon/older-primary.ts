/**
 * What a replica does about a primary that runs an older nethsm-replicator (a rolling upgrade that has not reached it
 * yet). Two things such a primary lacks matter here:
 * - the `instance` in its peer status: a recovery of it cannot be told from a blip, so it queues no restart pass
 *   (daemon.ts resumeMember) and `status` says so per namespace, with "upgrade the primary" (`restartsUnseenView`);
 * - the streamed inventory ranges: a pass falls back to the one-answer inventory, which cannot carry a namespace beyond
 *   MAX_INVENTORY_KEYS keys (or one string). Such a pass fails the same way every time: `readOneAnswerInventory` names it
 *   (AntiEntropyPrimaryTooOldError), and `OneAnswerRefusals` keeps every later pass of the namespace from asking that
 *   primary again until it answers as another version.
 */
import { AntiEntropyPrimaryTooOldError, PeerMessageInvalidError } from '../errors.js';
import { MAX_INVENTORY_KEYS, parseNamespaceInventory, type NamespaceInventory } from '../namespaces/inventory.js';
import type { PeerClient } from '../peer/client.js';
import type { NamespaceRow } from '../state/roles-repo.js';
import type { SiteContext } from './context.js';
import { peerVersion, peerWithoutInstance } from './peer-watch.js';

/**
 * The primary's one-answer inventory of `namespace`, validated. Throws AntiEntropyPrimaryTooOldError when the answer
 * holds more keys than one answer may or is too large to read as one string (no retry can fix either against this
 * primary), and what `peer.inventory` or the validation throws otherwise.
 */
export async function readOneAnswerInventory(peer: Pick<PeerClient, 'name' | 'inventory'>, namespace: string): Promise<NamespaceInventory> {
  const site = { namespace, site: peer.name };
  let raw: unknown;
  try {
    raw = await peer.inventory(namespace);
  } catch (err) {
    if (tooLargeToRead(err)) throw tooOld(peer.name, namespace, 'too large to read as one answer', err);
    throw err;
  }
  const keys = (raw as { keys?: unknown } | null)?.keys;
  if (Array.isArray(keys) && keys.length > MAX_INVENTORY_KEYS) {
    throw tooOld(peer.name, namespace, `${keys.length} keys, more than one answer may hold (${MAX_INVENTORY_KEYS})`);
  }
  return parseNamespaceInventory(raw, site);
}

/** An answer the client could not turn into one string or parse for its size (not a malformed one). */
export function tooLargeToRead(err: unknown): boolean {
  if (!(err instanceof PeerMessageInvalidError)) return false;
  const cause = err.cause as { code?: unknown } | undefined;
  return cause instanceof RangeError || cause?.code === 'ERR_STRING_TOO_LONG';
}

function tooOld(site: string, namespace: string, why: string, cause?: unknown): AntiEntropyPrimaryTooOldError {
  return new AntiEntropyPrimaryTooOldError(
    `the primary ${site} serves no inventory ranges (an older nethsm-replicator) and its one-answer inventory of namespace ${namespace} cannot be taken (${why}): no anti-entropy pass of it can run against that primary`,
    { namespace, site, ...(cause === undefined ? {} : { cause }) },
  );
}

/**
 * The namespaces whose one-answer pass a primary could not serve, with the version it ran then. In memory: this
 * daemon's restart tries once more (the namespace may have shrunk meanwhile).
 */
export class OneAnswerRefusals {
  readonly #refused = new Map<string, { primary: string; version: string | undefined; error: AntiEntropyPrimaryTooOldError }>();

  constructor(private readonly ctx: SiteContext) {}

  /** A pass of `namespace` failed with `error` against `primary`: later ones do not ask it while it runs this version. */
  note(namespace: string, primary: string, error: AntiEntropyPrimaryTooOldError): void {
    this.#refused.set(namespace, { primary, version: peerVersion(this.ctx, primary), error });
  }

  /**
   * Throws the recorded error when a pass of `namespace` against `primary` would ask it again in vain (same primary,
   * same version); forgets the record otherwise (another primary, or an upgraded one: the pass is worth a try).
   */
  check(namespace: string, primary: string): void {
    const r = this.#refused.get(namespace);
    if (!r) return;
    if (this.stands(namespace, primary)) throw r.error;
    this.#refused.delete(namespace);
  }

  /** Whether a pass of `namespace` against `primary` would be refused now (same primary, same version as recorded). */
  stands(namespace: string, primary: string): boolean {
    const r = this.#refused.get(namespace);
    return !!r && r.primary === primary && r.version === peerVersion(this.ctx, primary);
  }

  /** A pass of `namespace` completed: nothing stands in its way any more. */
  clear(namespace: string): void {
    this.#refused.delete(namespace);
  }
}

/**
 * For `status` and `/health/ready`: a replica whose primary names no daemon instance in its peer status (an older
 * nethsm-replicator), so its restarts cannot be told from blips and no pass is queued after them; null otherwise.
 */
export function restartsUnseenView(ctx: SiteContext, row: NamespaceRow): { primary: string; version: string; cause: string; try: string } | null {
  if (row.role !== 'replica' || row.primarySite === ctx.site) return null;
  const older = peerWithoutInstance(ctx, row.primarySite);
  if (!older) return null;
  const primary = row.primarySite;
  return {
    primary,
    version: older.version,
    cause:
      `its primary ${primary} runs nethsm-replicator ${older.version}, whose peer status does not say when its daemon restarts: ` +
      'no anti-entropy pass (or snapshot) is queued when it comes back, so writes made straight to its NetHSM while its daemon was down are found by the scheduled anti-entropy pass (antiEntropy.schedule) only',
    try: `Upgrade nethsm-replicator at ${primary} (its upgrade's own restart is seen and queues the pass); nothing to do here meanwhile.`,
  };
}
