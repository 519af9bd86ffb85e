/**
 * The change stream's wire format: `GET /peer/v1/namespaces/:ns/changes?after=<epoch>.<seq>&log=<log id|none>` answers
 * NDJSON, one JSON object per line, each validated here by the receiver (strict objects, bounded sizes). No line carries
 * key material in the clear: an import carries one envelope, sealed to the receiving site's transport key. Every line
 * names the primary's change log (`log`) when the replica asked with a `log` parameter; a primary older than log ids
 * sends none, and the replica treats "no log id" as a log of its own (docs/streaming.md, "Change-log identity").
 */
import { z } from 'zod';
import { isValidId } from '../nethsm/ids.js';
import { EnvelopeInvalidError } from '../errors.js';
import type { ChangeKind, LoggedChange } from '../state/changelog-repo.js';
import { ENVELOPE_VERSION, envelopeSchema, markEnvelopeValidated, type Envelope } from './envelope.js';

/** Largest line a receiver accepts: a 1 MiB certificate in base64 plus the line's other fields. */
export const MAX_LINE_BYTES = 2 * 1024 * 1024;
/** Largest certificate the NetHSM stores (FACTS §5.7). */
export const MAX_CERT_BYTES = 1024 * 1024;

const id = z.string().max(128).refine(isValidId, 'must be a valid NetHSM id');
const epoch = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const seq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const time = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ref = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be a UUID');
const label = z.string().refine((s) => Buffer.byteLength(s, 'utf8') <= 32, 'must be at most 32 bytes of UTF-8');
const reason = z.string().min(1).max(500);
/** A change log's identity: a UUID the primary made when the log was created (ChangeLogRepo.logId). */
export const logIdSchema = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be a UUID (a change log id)');
/** Optional: a primary older than log ids sends none. */
const log = logIdSchema.optional();
const certB64 = z
  .string()
  .max(Math.ceil(MAX_CERT_BYTES / 3) * 4)
  .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'must be canonical base64')
  .min(4, 'must not be empty');

const head = z.strictObject({ epoch, seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) });
const common = { type: z.literal('change'), epoch, seq, at: time, ref, log };

export const changeLineSchema = z.discriminatedUnion('kind', [
  z.strictObject({ ...common, kind: z.literal('key-imported'), keyId: id, envelope: envelopeSchema }),
  z.strictObject({ ...common, kind: z.literal('key-deleted'), keyId: id }),
  z.strictObject({ ...common, kind: z.literal('key-moved'), keyId: id, newId: id }),
  z.strictObject({ ...common, kind: z.literal('cert-set'), keyId: id, contentType: z.string().min(1).max(200), data: certB64 }),
  z.strictObject({ ...common, kind: z.literal('cert-removed'), keyId: id }),
  z.strictObject({ ...common, kind: z.literal('tag-added'), keyId: id, tag: id }),
  z.strictObject({ ...common, kind: z.literal('tag-removed'), keyId: id, tag: id }),
  z.strictObject({ ...common, kind: z.literal('label-set'), keyId: id, label }),
  z.strictObject({ ...common, kind: z.literal('label-removed'), keyId: id }),
  z.strictObject({ ...common, kind: z.literal('catchup'), reason }),
]);
export type ChangeLine = z.infer<typeof changeLineSchema>;

export const heartbeatLineSchema = z.strictObject({ type: z.literal('heartbeat'), at: time, head, log });
export type HeartbeatLine = z.infer<typeof heartbeatLineSchema>;

export const snapshotRequiredLineSchema = z.strictObject({ type: z.literal('snapshot-required'), reason, head, log });
export type SnapshotRequiredLine = z.infer<typeof snapshotRequiredLineSchema>;

export type StreamLine = ChangeLine | HeartbeatLine | SnapshotRequiredLine;

export type LineResult = { ok: true; line: StreamLine } | { ok: false; problem: string };

/** Parses and validates one line (without its newline). Never throws; the problem names the field. */
export function parseLine(text: string): LineResult {
  if (Buffer.byteLength(text, 'utf8') > MAX_LINE_BYTES) return { ok: false, problem: `line is over ${MAX_LINE_BYTES} bytes` };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'line is not JSON' };
  }
  const type = (value as { type?: unknown } | null)?.type;
  const schema =
    type === 'change' ? changeLineSchema : type === 'heartbeat' ? heartbeatLineSchema : type === 'snapshot-required' ? snapshotRequiredLineSchema : undefined;
  if (!schema) return { ok: false, problem: `line type ${JSON.stringify(type)?.slice(0, 40) ?? 'undefined'} is not change, heartbeat or snapshot-required` };
  const r = schema.safeParse(value);
  if (r.success) {
    const line = r.data as StreamLine;
    // The envelope passed envelopeSchema just now: openEnvelope need not run it again.
    if (line.type === 'change' && line.kind === 'key-imported') markEnvelopeValidated(line.envelope);
    return { ok: true, line };
  }
  const issue = r.error.issues[0];
  return { ok: false, problem: `${issue && issue.path.length > 0 ? issue.path.join('.') : 'line'} ${issue?.message ?? 'is invalid'}` };
}

/** A position as the `after` query parameter: `<epoch>.<seq>`. */
export function formatPosition(p: { epoch: number; seq: number }): string {
  return `${p.epoch}.${p.seq}`;
}

/** Parses `<epoch>.<seq>` (both whole numbers ≥ 0); undefined when malformed. */
export function parsePosition(text: string | null | undefined): { epoch: number; seq: number } | undefined {
  const m = /^(\d{1,15})\.(\d{1,15})$/.exec(text ?? '');
  if (!m) return undefined;
  return { epoch: Number(m[1]), seq: Number(m[2]) };
}

/** The `log` query parameter of a replica whose position has no log id (taken before log ids, or from a primary without). */
export const NO_LOG_PARAM = 'none';

/**
 * Parses the `log` query parameter: `undefined` when absent (a replica older than log ids: it is sent lines without
 * `log`), `null` for `none` (the replica knows log ids, its position has none), else the log id. Undefined `ok` when
 * malformed.
 */
export function parseLogParam(text: string | null): { ok: true; log: string | null | undefined } | { ok: false } {
  if (text === null) return { ok: true, log: undefined };
  if (text === NO_LOG_PARAM) return { ok: true, log: null };
  return logIdSchema.safeParse(text).success ? { ok: true, log: text } : { ok: false };
}

/**
 * The line a logged change becomes for the receiving `site`, naming change log `log` when given (the replica asked
 * with a `log` parameter). An import carries only that site's envelope; an import without one (the site's transport
 * key was unknown when it was sealed), or with one of an older format (logged before an upgrade, not bound to its key
 * id), becomes a catch-up. Catch-ups and malformed rows also become catch-ups, so the replica takes a snapshot rather
 * than miss the change.
 */
export function changeLineFor(c: LoggedChange, site: string, log?: string): ChangeLine {
  const common = { type: 'change' as const, epoch: c.epoch, seq: c.seq, at: c.createdAt, ref: c.ref, ...(log !== undefined ? { log } : {}) };
  const d = c.detail as Record<string, string | undefined>;
  const catchup = (r: string): ChangeLine => ({ ...common, kind: 'catchup', reason: r });
  const keyId = c.keyId;
  if (c.kind === 'catchup') return catchup(typeof d.reason === 'string' && d.reason !== '' ? d.reason.slice(0, 500) : 'catch-up');
  if (keyId === undefined) return catchup(`${c.kind} without a key id`);
  switch (c.kind) {
    case 'key-imported': {
      const env = c.envelopes?.[site] as Envelope | undefined;
      if (!env) return catchup(`key ${keyId} imported without an envelope for site ${site}`);
      // Sealed by an older release (logged before an upgrade): its context did not bind the key id, so it is not sent.
      if (env.v !== ENVELOPE_VERSION) return catchup(`key ${keyId} imported in envelope format v${String(env.v)}, which is not bound to its key id`);
      return { ...common, kind: 'key-imported', keyId, envelope: env };
    }
    case 'key-moved':
      return d.newId ? { ...common, kind: 'key-moved', keyId, newId: d.newId } : catchup('move without a new id');
    case 'cert-set':
      return d.data && d.contentType ? { ...common, kind: 'cert-set', keyId, contentType: d.contentType, data: d.data } : catchup('certificate without data');
    case 'tag-added':
    case 'tag-removed':
      return d.tag ? { ...common, kind: c.kind, keyId, tag: d.tag } : catchup('tag change without a tag');
    case 'label-set':
      return d.label !== undefined ? { ...common, kind: 'label-set', keyId, label: d.label } : catchup('label without a value');
    case 'key-deleted':
    case 'cert-removed':
    case 'label-removed':
      return { ...common, kind: c.kind, keyId };
  }
}

/** What an envelope is bound to: the change it belongs to (docs/key-material.md). */
export interface EnvelopeBinding {
  namespace: string;
  keyId: string;
  kind: ChangeKind;
  /** The change's ref (the intent id, a UUID). */
  ref: string;
}

/**
 * The AAD binding an import's envelope to its namespace, key id, change kind and ref: an envelope moved to another id,
 * namespace, kind or change fails GCM authentication at the replica. Fields are newline-separated; none may contain a
 * newline (ids and UUIDs cannot), so the encoding is unambiguous; a part that does is refused (EnvelopeInvalidError).
 */
export function envelopeContext(b: EnvelopeBinding): string {
  const parts = [b.namespace, b.keyId, b.kind, b.ref];
  if (parts.some((p) => typeof p !== 'string' || p.includes('\n'))) throw new EnvelopeInvalidError('an envelope context part is not a string or holds a newline');
  return `nethsm-replicator stream v2\n${parts.join('\n')}`;
}
