/**
 * `POST /system/{reboot,shutdown,factory-reset}` (FACTS-system §1.1–1.3). Each answers 204 (no body, Content-Type
 * not checked, 1 MiB body limit) and then does its power transition once the answer has left, as the firmware hands
 * the command to its platform after building the answer.
 * - reboot, factory-reset: Operational (root Administrator); the firmware's Failed state (no auth) does not exist here.
 * - shutdown: every state; root Administrator when Operational, no authentication otherwise.
 */
import type { ServerResponse } from 'node:http';
import { NO_CONTENT } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';

const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };

/** Runs `action` once the response has been handed to the connection (or the connection went away first). */
export function afterResponse(sim: SimCore, res: ServerResponse, action: () => Promise<void>): void {
  let done = false;
  const run = (): void => {
    if (done) return;
    done = true;
    // A macrotask later, so the 204 is written to the socket before the listener drops connections.
    setImmediate(() => {
      action().catch((err: unknown) => sim.logger.error({ err }, 'simulator power action failed'));
    });
  };
  res.once('finish', run);
  res.once('close', run);
}

export function powerRoutes(): Route[] {
  return [
    {
      method: 'POST',
      path: '/system/reboot',
      states: ['Operational'],
      access: ROOT_ADMIN,
      handler: (ctx, sim) => {
        afterResponse(sim, ctx.res, () => sim.power.reboot());
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/system/shutdown',
      states: ['Unprovisioned', 'Locked', 'Operational'],
      access: (state) => (state === 'Operational' ? ROOT_ADMIN : 'public'),
      handler: (ctx, sim) => {
        afterResponse(sim, ctx.res, () => sim.power.shutdown());
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/system/factory-reset',
      states: ['Operational'],
      access: ROOT_ADMIN,
      handler: (ctx, sim) => {
        afterResponse(sim, ctx.res, () => sim.power.factoryReset());
        return NO_CONTENT;
      },
    },
  ];
}
