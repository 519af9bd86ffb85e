/**
 * `/namespaces*` (root Administrator): create (existing → 400, c15), list, delete (removes the namespace's keys,
 * keeps its users, which become unusable until it is created again — FACTS §4).
 */
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT } from '../http.js';
import type { Route } from '../router.js';
import { requireId } from '../validation.js';

const OP = ['Operational' as const];
const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };

export function namespaceRoutes(): Route[] {
  return [
    {
      method: 'GET',
      path: '/namespaces',
      states: OP,
      access: ROOT_ADMIN,
      produces: 'application/json',
      op: 'namespace',
      handler: (_c, sim) => ({ status: 200, json: sim.namespaces.list().map((id) => ({ id })) }),
    },
    {
      method: 'PUT',
      path: '/namespaces/:id',
      states: OP,
      access: ROOT_ADMIN,
      accepts: ['application/json', 'application/octet-stream'],
      op: 'namespace',
      handler: (ctx, sim) => {
        const id = ctx.params['id'] ?? '';
        requireId(id, 'namespace ID');
        if (sim.namespaces.exists(id)) throw new SimHttpError(400, `Namespace ${id} already exists.`);
        sim.namespaces.create(id);
        return NO_CONTENT;
      },
    },
    {
      method: 'DELETE',
      path: '/namespaces/:id',
      states: OP,
      access: ROOT_ADMIN,
      exists: (ctx, sim) => {
        requireId(ctx.params['id'] ?? '', 'namespace ID');
        return sim.namespaces.exists(ctx.params['id'] ?? '');
      },
      op: 'namespace',
      handler: (ctx, sim) => {
        const id = ctx.params['id']!;
        sim.keys.deleteNamespace(id);
        sim.namespaces.delete(id);
        return NO_CONTENT;
      },
    },
  ];
}
