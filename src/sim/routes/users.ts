/**
 * `/users*` with the root-versus-namespace rules of FACTS §3.3 and c16–c20.
 */
import { splitUserId, isValidId } from '../../nethsm/ids.js';
import { generateId } from '../keys/material.js';
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, callerOf, type Caller, type RequestContext } from '../http.js';
import { decodeBody } from '../json-decode.js';
import { checkPassphrase, passphraseReq, userReq } from '../requests.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { newUserRecord, passphraseDigestFor } from '../users.js';

const OP = ['Operational' as const];
const ADMIN = { roles: ['Administrator' as const] };
const ADMIN_OR_OPERATOR = { roles: ['Administrator' as const, 'Operator' as const] };
const JSON_TYPE = 'application/json';


/** The target user id from the path; 400 when it breaks the UserID rule. */
function targetId(ctx: RequestContext): { id: string; namespace: string | undefined } {
  const id = ctx.params['id'] ?? '';
  const split = splitUserId(id);
  if (split === undefined) throw new SimHttpError(400, `Invalid user ID: ${JSON.stringify(id)}.`);
  return { id, namespace: split.namespace };
}

function namespaceOfTarget(ctx: RequestContext): string | undefined | null {
  const split = splitUserId(ctx.params['id'] ?? '');
  return split === undefined ? null : split.namespace;
}

/** Strict rule (delete, passphrase, tag changes): same namespace; a root caller may act on `ns~u` only while `ns` does not exist. */
function strictSameNamespace(caller: Caller, targetNs: string | undefined, sim: SimCore): boolean {
  if (caller.namespace === undefined) return targetNs === undefined || !sim.namespaces.exists(targetNs);
  return targetNs === caller.namespace;
}

/** Read rule (GET user, GET tags): a root caller may read anyone; a namespaced caller only its namespace. */
function readableNamespace(caller: Caller, targetNs: string | undefined): boolean {
  return caller.namespace === undefined || targetNs === caller.namespace;
}

const forbidStrict = (ctx: RequestContext, sim: SimCore): boolean => {
  const ns = namespaceOfTarget(ctx);
  return ns !== null && !strictSameNamespace(callerOf(ctx), ns, sim);
};

/** GET user/tags: Operators may read only themselves; others by the read rule. */
const forbidRead = (ctx: RequestContext): boolean => {
  const ns = namespaceOfTarget(ctx);
  if (ns === null) return false;
  const caller = callerOf(ctx);
  if (caller.user.role === 'Operator') return caller.userId !== ctx.params['id'];
  return !readableNamespace(caller, ns);
};

const userExists = (ctx: RequestContext, sim: SimCore): boolean => sim.users.exists(targetId(ctx).id);

/** Creation rules of §3.3 (JSON 403s), then writes the user. */
function createUser(sim: SimCore, caller: Caller, id: string, ns: string | undefined, body: Buffer): void {
  if (caller.namespace === undefined) {
    if (ns !== undefined && sim.namespaces.exists(ns)) throw new SimHttpError(403, 'R-User trying to create N-User for an already created namespace');
  } else if (ns !== caller.namespace) {
    throw new SimHttpError(403, 'N-User can only create users in its own namespace');
  }
  const req = decodeBody(body, userReq);
  checkPassphrase('passphrase', req.passphrase);
  sim.users.put(id, newUserRecord(req.realName, req.role, req.passphrase));
}

function created(id: string, withBody: boolean): { status: number; json?: unknown; headers: Record<string, string> } {
  const headers = { Location: `/api/v1/users/${id}` };
  return withBody ? { status: 201, json: { id }, headers } : { status: 201, headers };
}

export function userRoutes(): Route[] {
  return [
    {
      method: 'GET',
      path: '/users',
      states: OP,
      access: ADMIN,
      produces: JSON_TYPE,
      op: 'user',
      handler: (ctx, sim) => {
        const caller = callerOf(ctx);
        const ids = sim.users.list().filter((u) => caller.namespace === undefined || splitUserId(u)?.namespace === caller.namespace);
        return { status: 200, json: ids.map((user) => ({ user })) };
      },
    },
    {
      method: 'POST',
      path: '/users',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE],
      produces: JSON_TYPE,
      op: 'user',
      handler: (ctx, sim) => {
        const caller = callerOf(ctx);
        const id = caller.namespace === undefined ? generateId() : `${caller.namespace}~${generateId()}`;
        createUser(sim, caller, id, caller.namespace, ctx.body);
        return created(id, true);
      },
    },
    {
      method: 'GET',
      path: '/users/:id',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      forbidden: forbidRead,
      produces: JSON_TYPE,
      exists: userExists,
      op: 'user',
      handler: (ctx, sim) => {
        const u = sim.users.get(targetId(ctx).id)!;
        return { status: 200, json: { realName: u.name, role: u.role } };
      },
    },
    {
      method: 'PUT',
      path: '/users/:id',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE],
      op: 'user',
      handler: (ctx, sim) => {
        const { id, namespace } = targetId(ctx);
        const caller = callerOf(ctx);
        if (caller.namespace !== undefined && namespace !== caller.namespace) throw new SimHttpError(403);
        if (sim.users.exists(id)) throw new SimHttpError(409, `User with id ${id} already exists`);
        createUser(sim, caller, id, namespace, ctx.body);
        return created(id, false);
      },
    },
    {
      method: 'POST',
      path: '/users/:id',
      states: OP,
      access: ADMIN,
      accepts: [JSON_TYPE],
      produces: JSON_TYPE,
      op: 'user',
      handler: (ctx, sim) => {
        const raw = ctx.params['id'] ?? '';
        // Only the form `ns~` is accepted here: the id part is generated.
        if (!raw.endsWith('~') || raw.indexOf('~') !== raw.length - 1 || !isValidId(raw.slice(0, -1))) {
          throw new SimHttpError(400, 'POST /users/{UserID} requires the form "<namespace>~".');
        }
        const ns = raw.slice(0, -1);
        const id = `${ns}~${generateId()}`;
        createUser(sim, callerOf(ctx), id, ns, ctx.body);
        return created(id, true);
      },
    },
    {
      method: 'DELETE',
      path: '/users/:id',
      states: OP,
      access: ADMIN,
      forbidden: forbidStrict,
      exists: userExists,
      op: 'user',
      handler: (ctx, sim) => {
        const { id } = targetId(ctx);
        if (id === callerOf(ctx).userId) throw new SimHttpError(400, 'Users cannot delete themselves');
        sim.users.delete(id);
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/users/:id/passphrase',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      forbidden: (ctx, sim) => {
        const caller = callerOf(ctx);
        if (caller.user.role !== 'Administrator' && caller.userId !== ctx.params['id']) return true;
        return forbidStrict(ctx, sim);
      },
      exists: userExists,
      op: 'user',
      handler: (ctx, sim) => {
        const { id } = targetId(ctx);
        const body = decodeBody(ctx.body, passphraseReq);
        checkPassphrase('passphrase', body.passphrase);
        const u = sim.users.get(id)!;
        sim.users.put(id, { ...u, ...passphraseDigestFor(body.passphrase) });
        return NO_CONTENT;
      },
    },
    {
      method: 'GET',
      path: '/users/:id/tags',
      states: OP,
      access: ADMIN_OR_OPERATOR,
      forbidden: forbidRead,
      produces: JSON_TYPE,
      exists: (ctx, sim) => sim.users.get(targetId(ctx).id)?.role === 'Operator',
      op: 'user',
      handler: (ctx, sim) => ({ status: 200, json: [...sim.users.get(targetId(ctx).id)!.tags].sort() }),
    },
    {
      method: 'PUT',
      path: '/users/:id/tags/:tag',
      states: OP,
      access: ADMIN,
      forbidden: forbidStrict,
      accepts: [JSON_TYPE, 'application/octet-stream'],
      op: 'user',
      handler: (ctx, sim) => {
        const { id } = targetId(ctx);
        const tag = ctx.params['tag'] ?? '';
        if (!isValidId(tag)) throw new SimHttpError(400, `Invalid tag: ${JSON.stringify(tag)}.`);
        const u = sim.users.get(id);
        if (u === undefined) throw new SimHttpError(404, 'User not found');
        if (u.role !== 'Operator') throw new SimHttpError(400, 'Tags can only be set on users with role Operator.');
        if (u.tags.includes(tag)) return { status: 304 };
        sim.users.put(id, { ...u, tags: [...u.tags, tag].sort() });
        return NO_CONTENT;
      },
    },
    {
      method: 'DELETE',
      path: '/users/:id/tags/:tag',
      states: OP,
      access: ADMIN,
      forbidden: forbidStrict,
      exists: (ctx, sim) => sim.users.get(targetId(ctx).id)?.tags.includes(ctx.params['tag'] ?? '') === true,
      op: 'user',
      handler: (ctx, sim) => {
        const { id } = targetId(ctx);
        const u = sim.users.get(id)!;
        sim.users.put(id, { ...u, tags: u.tags.filter((t) => t !== ctx.params['tag']) });
        return NO_CONTENT;
      },
    },
  ];
}
