/**
 * `/keys*` (FACTS §2 rows 11–30, §5): namespace scoping (a caller sees only its namespace's keys; root only root keys),
 * list with prefix/filter/label, create by generate or import (JSON or PEM multipart), get, delete, public.pem, csr,
 * sign/decrypt/encrypt with the tag check and the operations counter, cert, label, restriction tags, move.
 * Key material is simkeys' business (`../keys/`).
 */
import { isValidId } from '../../nethsm/ids.js';
import * as simkeys from '../keys/index.js';
import { keyLabel } from '../keys/validate.js';
import { SimHttpError } from '../http-error.js';
import { CRYPTO_BODY_LIMIT, NO_CONTENT, callerOf, mediaType, parseJsonBody, type Reply, type RequestContext } from '../http.js';
import { parseMultipart } from '../multipart.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import type { KeyRecord } from '../keys/types.js';

const OP = ['Operational' as const];
const ADMIN = { roles: ['Administrator' as const] };
const OPERATOR = { roles: ['Operator' as const] };
const ADMIN_OR_OPERATOR = { roles: ['Administrator' as const, 'Operator' as const] };
const JSON_TYPE = 'application/json';
const PEM_TYPE = 'application/x-pem-file';
const MULTIPART = 'multipart/form-data';
const OCTET = 'application/octet-stream';

/** The key id from the path; 400 when it breaks the ID rule (c6). */
function keyId(ctx: RequestContext): string {
  const id = ctx.params['id'] ?? '';
  if (!isValidId(id)) throw new SimHttpError(400, `Invalid key ID: ${JSON.stringify(id)}.`);
  return id;
}

const ns = (ctx: RequestContext): string | undefined => callerOf(ctx).namespace;
const keyExists = (ctx: RequestContext, sim: SimCore): boolean => sim.keys.exists(ns(ctx), keyId(ctx));

/** The key for handlers that report a missing key themselves (PUT label/tag/cert → 404 JSON). */
function keyOr404(ctx: RequestContext, sim: SimCore): KeyRecord {
  const r = sim.keys.get(ns(ctx), keyId(ctx));
  if (r === undefined) throw new SimHttpError(404, 'key not found');
  return r;
}

function listReply(ctx: RequestContext, sim: SimCore, ids: string[], honourFilter: boolean): Reply {
  const caller = callerOf(ctx);
  const label = ctx.query.get('label');
  if (label !== null) keyLabel(label, 'label');
  const filter = honourFilter && ctx.query.has('filter') && caller.user.role === 'Operator';
  const keep = ids.filter((id) => {
    if (!filter && label === null) return true;
    const r = sim.keys.get(caller.namespace, id);
    if (r === undefined) return false;
    if (filter && !simkeys.tagsAllow(r, caller.user.tags)) return false;
    return label === null || (r.label ?? '') === label;
  });
  return { status: 200, json: keep.map((id) => ({ id })) };
}

/** Parses an import body (JSON PrivateKey or multipart arguments + PEM). */
async function importBody(ctx: RequestContext): Promise<KeyRecord> {
  if (mediaType(ctx.req.headers['content-type']) === MULTIPART) {
    const parts = await parseMultipart(ctx.req.headers, ctx.body);
    if (parts.length !== 2) throw new SimHttpError(400, 'Multipart import needs exactly two parts: arguments and key_file.');
    const args = parseJsonBody(parts[0]!.data);
    return simkeys.importKeyPem(args, parts[1]!.data.toString('utf8')).record;
  }
  return simkeys.importKeyJson(parseJsonBody(ctx.body)).record;
}

function storeNew(sim: SimCore, namespace: string | undefined, id: string, record: KeyRecord): void {
  if (sim.keys.exists(namespace, id)) throw new SimHttpError(400, `Key with id ${id} already exists`);
  sim.keys.put(namespace, id, record);
}

function createdKey(id: string): Reply {
  return { status: 201, json: { id }, headers: { Location: `/api/v1/keys/${id}` } };
}

/** sign / decrypt / encrypt: tag check with the caller's tags, then the operation, then the counter. */
function cryptoRoute(name: 'sign' | 'decrypt' | 'encrypt'): Route {
  return {
    method: 'POST',
    path: `/keys/:id/${name}`,
    states: OP,
    access: OPERATOR,
    body: CRYPTO_BODY_LIMIT,
    produces: JSON_TYPE,
    exists: keyExists,
    op: name,
    handler: (ctx, sim) => {
      const caller = callerOf(ctx);
      const id = keyId(ctx);
      const r = sim.keys.get(caller.namespace, id)!;
      if (!simkeys.tagsAllow(r, caller.user.tags)) throw new SimHttpError(403, 'tags restriction not met');
      const body = parseJsonBody(ctx.body);
      const out = name === 'sign' ? simkeys.sign(r, body) : name === 'decrypt' ? simkeys.decrypt(r, body) : simkeys.encrypt(r, body);
      sim.keys.countOperation(caller.namespace, id);
      sim.metrics.keyOperation(name);
      return { status: 200, json: out };
    },
  };
}

export function keyRoutes(): Route[] {
  return [
    {
      method: 'GET',
      path: '/keys',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: JSON_TYPE,
      op: 'key-list',
      handler: (ctx, sim) => listReply(ctx, sim, sim.keys.list(ns(ctx)), true),
    },
    {
      method: 'POST',
      path: '/keys',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE, MULTIPART],
      produces: JSON_TYPE,
      op: 'import',
      handler: async (ctx, sim) => {
        const record = await importBody(ctx);
        const id = simkeys.generateId();
        storeNew(sim, ns(ctx), id, record);
        return createdKey(id);
      },
    },
    {
      method: 'POST',
      path: '/keys/generate',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE],
      produces: JSON_TYPE,
      op: 'generate',
      handler: async (ctx, sim) => {
        const { id: wanted, record } = await simkeys.generateKeyAsync(parseJsonBody(ctx.body));
        const id = wanted === undefined || wanted === '' ? simkeys.generateId() : wanted;
        sim.metrics.keyOperation('generate'); // counted before the id-exists check, as the firmware does
        storeNew(sim, ns(ctx), id, record);
        return createdKey(id);
      },
    },
    {
      method: 'GET',
      path: '/keys/:prefix*',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: JSON_TYPE,
      op: 'key-list',
      handler: (ctx, sim) => {
        const prefix = ctx.params['prefix'] ?? '';
        if (!isValidId(prefix)) throw new SimHttpError(400, `Invalid key ID prefix: ${JSON.stringify(prefix)}.`);
        // The firmware ignores ?filter on prefix listings (c5).
        return listReply(ctx, sim, sim.keys.list(ns(ctx)).filter((id) => id.startsWith(prefix)), false);
      },
    },
    {
      method: 'GET',
      path: '/keys/:id',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: JSON_TYPE,
      exists: keyExists,
      op: 'key-get',
      handler: (ctx, sim) => ({ status: 200, json: simkeys.publicKeyView(sim.keys.get(ns(ctx), keyId(ctx))!) }),
    },
    {
      method: 'PUT',
      path: '/keys/:id',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE, MULTIPART],
      op: 'import',
      handler: async (ctx, sim) => {
        const id = keyId(ctx);
        const record = await importBody(ctx);
        storeNew(sim, ns(ctx), id, record);
        return NO_CONTENT;
      },
    },
    {
      method: 'DELETE',
      path: '/keys/:id',
      states: OP,
      access: ADMIN,
      exists: keyExists,
      op: 'key-delete',
      handler: (ctx, sim) => {
        sim.keys.delete(ns(ctx), keyId(ctx));
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/keys/:id/public.pem',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: PEM_TYPE,
      exists: keyExists,
      op: 'key-get',
      handler: (ctx, sim) => ({ status: 200, text: simkeys.publicKeyPem(sim.keys.get(ns(ctx), keyId(ctx))!), contentType: PEM_TYPE }),
    },
    {
      method: 'POST',
      path: '/keys/:id/csr.pem',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: PEM_TYPE,
      exists: keyExists,
      op: 'key-get',
      handler: async (ctx, sim) => ({ status: 200, text: await simkeys.csr(sim.keys.get(ns(ctx), keyId(ctx))!, parseJsonBody(ctx.body)), contentType: PEM_TYPE }),
    },
    cryptoRoute('sign'),
    cryptoRoute('decrypt'),
    cryptoRoute('encrypt'),
    {
      method: 'GET',
      path: '/keys/:id/cert',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      produces: OCTET,
      exists: (ctx, sim) => sim.keys.get(ns(ctx), keyId(ctx))?.cert != null,
      op: 'key-get',
      handler: (ctx, sim) => {
        const cert = sim.keys.get(ns(ctx), keyId(ctx))!.cert!;
        return { status: 200, bytes: cert.data, contentType: cert.contentType };
      },
    },
    {
      method: 'PUT',
      path: '/keys/:id/cert',
      states: OP,
      access: ADMIN,
      accepts: [OCTET],
      op: 'key-update',
      handler: (ctx, sim) => {
        const ct = ctx.req.headers['content-type'] ?? '';
        if (ct !== OCTET) throw new SimHttpError(400, `Content-Type must be exactly ${OCTET}.`);
        const r = keyOr404(ctx, sim);
        if (r.cert !== null) throw new SimHttpError(409, 'Certificate already exists.');
        sim.keys.put(ns(ctx), keyId(ctx), { ...r, cert: { contentType: OCTET, data: Buffer.from(ctx.body) } });
        return { status: 201, headers: { Location: `/api/v1/keys/${keyId(ctx)}/cert` } };
      },
    },
    {
      method: 'DELETE',
      path: '/keys/:id/cert',
      states: OP,
      access: ADMIN,
      exists: (ctx, sim) => sim.keys.get(ns(ctx), keyId(ctx))?.cert != null,
      op: 'key-update',
      handler: (ctx, sim) => {
        const r = sim.keys.get(ns(ctx), keyId(ctx))!;
        sim.keys.put(ns(ctx), keyId(ctx), { ...r, cert: null });
        return NO_CONTENT;
      },
    },
    {
      method: 'PUT',
      path: '/keys/:id/label',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE],
      op: 'key-update',
      handler: (ctx, sim) => {
        const body = parseJsonBody(ctx.body);
        if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).some((k) => k !== 'label') || !('label' in body)) {
          throw new SimHttpError(400, 'Invalid data for JSON schema: KeySetLabel needs exactly the field "label".');
        }
        const label = keyLabel((body as { label: unknown }).label, 'KeySetLabel');
        const r = keyOr404(ctx, sim);
        if ((r.label ?? '') === (label ?? '')) return { status: 304 };
        const next: KeyRecord = { ...r };
        if (label === undefined) delete next.label;
        else next.label = label;
        sim.keys.put(ns(ctx), keyId(ctx), next);
        return NO_CONTENT;
      },
    },
    {
      method: 'DELETE',
      path: '/keys/:id/label',
      states: OP,
      access: ADMIN,
      exists: keyExists,
      op: 'key-update',
      handler: (ctx, sim) => {
        const r = { ...sim.keys.get(ns(ctx), keyId(ctx))! };
        delete r.label;
        sim.keys.put(ns(ctx), keyId(ctx), r);
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/keys/:id/move',
      states: OP,
      access: ADMIN,
      produces: JSON_TYPE,
      exists: keyExists,
      op: 'key-update',
      handler: (ctx, sim) => {
        const body = parseJsonBody(ctx.body);
        if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).some((k) => k !== 'newId')) {
          throw new SimHttpError(400, 'Invalid data for JSON schema: MoveKeyRequest needs exactly the field "newId".');
        }
        const newId = (body as { newId?: unknown }).newId;
        if (typeof newId !== 'string' || !isValidId(newId)) throw new SimHttpError(400, `Invalid new key ID: ${JSON.stringify(newId ?? null)}.`);
        const id = keyId(ctx);
        if (sim.keys.exists(ns(ctx), newId)) throw new SimHttpError(409, `Key with id ${newId} already exists`);
        const r = sim.keys.get(ns(ctx), id)!;
        sim.keys.put(ns(ctx), newId, r);
        sim.keys.delete(ns(ctx), id);
        return { status: 200, json: { id: newId } };
      },
    },
    {
      method: 'PUT',
      path: '/keys/:id/restrictions/tags/:tag',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE, OCTET],
      op: 'key-update',
      handler: (ctx, sim) => {
        const tag = ctx.params['tag'] ?? '';
        if (!isValidId(tag)) throw new SimHttpError(400, `Invalid tag: ${JSON.stringify(tag)}.`);
        const r = keyOr404(ctx, sim);
        if (r.tags.includes(tag)) return { status: 304 };
        sim.keys.put(ns(ctx), keyId(ctx), { ...r, tags: [...r.tags, tag].sort() });
        return NO_CONTENT;
      },
    },
    {
      method: 'DELETE',
      path: '/keys/:id/restrictions/tags/:tag',
      states: OP,
      access: ADMIN,
      exists: (ctx, sim) => sim.keys.get(ns(ctx), keyId(ctx))?.tags.includes(ctx.params['tag'] ?? '') === true,
      op: 'key-update',
      handler: (ctx, sim) => {
        const r = sim.keys.get(ns(ctx), keyId(ctx))!;
        sim.keys.put(ns(ctx), keyId(ctx), { ...r, tags: r.tags.filter((t) => t !== ctx.params['tag']) });
        return NO_CONTENT;
      },
    },
  ];
}
