/**
 * The admin API between the CLI and the running daemon: JSON over HTTP on a unix socket (mode 0600) in the state
 * directory. Request bodies are validated with zod; errors travel as `{ error: { code, message, hint, … } }`.
 */
import { z } from 'zod';
import { isValidId } from '../nethsm/ids.js';

export const ADMIN_API_PREFIX = '/v1';

const namespaceId = z.string().refine(isValidId, { message: 'is not a valid namespace id' });

/** Who asked: recorded in the audit log. Free text from the CLI (user@host), bounded. */
export const actorSchema = z.string().min(1).max(200);

export const promoteRequestSchema = z.strictObject({ actor: actorSchema, force: z.boolean().default(false) });
export const demoteRequestSchema = z.strictObject({
  actor: actorSchema,
  /** The replica site to hand the namespace to; defaults to the only replica when there is one. */
  to: z.string().min(1).max(128).optional(),
});
export const simpleRequestSchema = z.strictObject({ actor: actorSchema });
/**
 * `restore-admins`: `forget` drops the pending record without restoring anything (the operator put the namespace's
 * administrators back by hand: `admins restore <namespace> --forget`); otherwise one attempt now.
 */
export const restoreAdminsRequestSchema = z.strictObject({ actor: actorSchema, forget: z.boolean().optional() });
/**
 * `onExisting`: what a first sync does when this site's device already holds the namespace. `refuse` (default) lists
 * what is there and stops; `remove` replaces it after saving a backup of what it held.
 */
export const syncRequestSchema = z.strictObject({
  actor: actorSchema,
  onExisting: z.enum(['refuse', 'remove']).default('refuse'),
  /** Sync a namespace paused at this site all the same. */
  force: z.boolean().default(false),
});

/**
 * `POST /v1/quarantine/ack`: the operator has looked at quarantine file `file`, a bare file name in the state
 * directory's `quarantine/` (the daemon checks it again: no directory part, the daemon's naming, an existing file).
 */
export const quarantineAckRequestSchema = z.strictObject({ actor: actorSchema, file: z.string().min(1).max(255) });

export type QuarantineAckRequest = z.infer<typeof quarantineAckRequestSchema>;
export type PromoteRequest = z.infer<typeof promoteRequestSchema>;
export type DemoteRequest = z.infer<typeof demoteRequestSchema>;
export type SimpleRequest = z.infer<typeof simpleRequestSchema>;
export type RestoreAdminsRequest = z.infer<typeof restoreAdminsRequestSchema>;
export type SyncRequest = z.infer<typeof syncRequestSchema>;

export const namespaceParam = namespaceId;

/**
 * The actions a namespace supports through the admin API. `restore-admins`: retry now the administrator restore a
 * promote (or resuming leadership) still owes (`admins restore <namespace>`; body `{ actor }`), or forget it
 * (`--forget`; body `{ actor, forget: true }`).
 */
export const NAMESPACE_ACTIONS = ['sync', 'promote', 'demote', 'pause', 'resume', 'restore-admins'] as const;
export type NamespaceAction = (typeof NAMESPACE_ACTIONS)[number];

/** Wire form of an error. */
export interface AdminErrorBody {
  error: { code: string; message: string; hint?: string; namespace?: string; site?: string; epoch?: number };
}
