/**
 * Messages between daemons on the peer API. Every body a peer sends is parsed with these schemas;
 * anything else is refused with 400 naming the field. No message carries a secret.
 */
import { z } from 'zod';
import { isValidId } from '../nethsm/ids.js';

export const PEER_API_PREFIX = '/peer/v1';

export const namespaceIdSchema = z.string().refine(isValidId, { message: 'is not a valid namespace id' });
export const siteNameSchema = z.string().min(1).max(128).regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/, 'is not a valid site name');
export const epochSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const roleSchema = z.enum(['primary', 'replica', 'fenced']);
export type Role = z.infer<typeof roleSchema>;

/** One namespace as a site sees it. */
export const namespaceViewSchema = z.strictObject({
  namespace: namespaceIdSchema,
  role: roleSchema,
  epoch: epochSchema,
  primarySite: siteNameSchema,
});
export type NamespaceView = z.infer<typeof namespaceViewSchema>;

/** `GET /peer/v1/status`. */
export const peerStatusSchema = z.strictObject({
  site: siteNameSchema,
  version: z.string().max(64),
  /** The daemon process's identity (random per start); absent from older daemons, which did not send it. */
  instance: z.string().regex(/^[0-9a-f]{16,64}$/, 'is not a daemon instance id (16 to 64 hex digits)').optional(),
  namespaces: z.array(namespaceViewSchema).max(10_000),
});
export type PeerStatus = z.infer<typeof peerStatusSchema>;

/** `POST /peer/v1/namespaces/:ns/epoch`: a site announces it is primary for `namespace` at `epoch`. */
export const epochAnnouncementSchema = z.strictObject({ epoch: epochSchema, primarySite: siteNameSchema });
export type EpochAnnouncement = z.infer<typeof epochAnnouncementSchema>;

/** Answer to an announcement: what the receiver now holds. */
export const epochAnswerSchema = z.strictObject({ accepted: z.boolean(), view: namespaceViewSchema });
export type EpochAnswer = z.infer<typeof epochAnswerSchema>;

/** `POST /peer/v1/namespaces/:ns/handoff`: a demoting primary asks this replica to sync and take over at `epoch`. */
export const handoffRequestSchema = z.strictObject({ fromEpoch: epochSchema });
export type HandoffRequest = z.infer<typeof handoffRequestSchema>;
export const handoffAnswerSchema = z.strictObject({ epoch: epochSchema });

/** Answer to `POST /peer/v1/namespaces/:ns/sync`. */
export const syncAnswerSchema = z.strictObject({ started: z.boolean() });

/** Headers on a snapshot response: the epoch and site it was taken at. */
export const SNAPSHOT_EPOCH_HEADER = 'x-nhr-epoch';
export const SNAPSHOT_SITE_HEADER = 'x-nhr-site';

/** Answer to `GET /peer/v1/namespaces/:ns/keys/:id/cert` (certificates are public; base64, bounded at 1 MiB like the NetHSM). */
export const certificateAnswerSchema = z.union([
  z.strictObject({ contentType: z.string().min(1).max(200), data: z.base64().max(1_400_000) }),
  z.strictObject({ contentType: z.null(), data: z.null() }),
]);

/**
 * `GET /peer/v1/serving`: what a site can serve to another site's gateway (cross-site crypto, docs/gateway.md "Serving
 * from a peer"): whether its own NetHSM serves now (`ok`: healthy and its gateway serves locally), whether it runs a
 * gateway at all, and per namespace its role and how old its copy is. A separate endpoint from `status` so that a peer
 * of an older version, whose strict status parser would refuse new fields, keeps working (it answers 404 here, and is
 * then not used for serving).
 */
export const servingViewSchema = z.strictObject({
  site: siteNameSchema,
  nethsm: z.enum(['ok', 'down']),
  gateway: z.boolean(),
  namespaces: z
    .array(
      z.strictObject({
        namespace: namespaceIdSchema,
        role: roleSchema,
        epoch: epochSchema,
        primarySite: siteNameSchema,
        /** Seconds since the replica's data was current at the primary; null for the primary, or a replica never synced. */
        lagSeconds: z.number().finite().min(0).max(1e10).nullable(),
      }),
    )
    .max(10_000),
});
export type ServingView = z.infer<typeof servingViewSchema>;

/**
 * `GET /peer/v1/nethsm`: how the site's daemon last found its own NetHSM (its `nethsm` member): a replica shows when
 * its primary's NetHSM is Locked, unreachable or not Operational (writes to the namespace fail there). A separate
 * endpoint for the same reason as `serving`: older peers answer 404 and are then simply not asked again until restart.
 */
export const peerNethsmSchema = z.strictObject({
  site: siteNameSchema,
  status: z.enum(['ok', 'unreachable', 'locked', 'not-operational', 'recovering']),
  /** The error code of its last failed check (`NHR_ERR_NETHSM_LOCKED`, …); null when it is ok. */
  errorCode: z.string().regex(/^NHR_ERR_[A-Z0-9_]{1,80}$/).nullable(),
});
export type PeerNethsm = z.infer<typeof peerNethsmSchema>;
