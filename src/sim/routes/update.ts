/**
 * `POST /system/update`, `/system/commit-update`, `/system/cancel-update` (FACTS-system §1.4–1.6): Operational,
 * root Administrator.
 * - update: 409 `Update already in progress.` while an upload is pending (checked before the body is read); uploads
 *   run one at a time; the image is checked by `update/image.ts`; 200 `{"releaseNotes":…}` written as the firmware's
 *   JSON writer does (raw bytes ≥ 0x80, `\u00XX` controls). No body limit, Content-Type not checked.
 * - commit: 412 without a pending upload; else 204 and a reboot. There is no second system to boot, so the simulator
 *   comes back with the same software version (a real device would report the new firmware's).
 * - cancel: 412 without a pending upload; else the upload is forgotten, 204.
 * The pending upload lives in RAM only: any boot forgets it.
 */
import { SimHttpError } from '../http-error.js';
import { NO_CONTENT, type Reply } from '../http.js';
import type { Route } from '../router.js';
import type { SimCore } from '../context.js';
import { latin1JsonString } from '../latin1-json.js';
import { readUpdateImage } from '../update/image.js';
import { SIM_SOFTWARE_VERSION } from './system.js';
import { afterResponse } from './power.js';

const ROOT_ADMIN = { roles: ['Administrator' as const], root: true };
const NO_UPDATE = 'No update available. Please upload a system image to /system/update.';

/** The firmware's upload mutex, per simulator. */
const uploads = new WeakMap<SimCore, Promise<unknown>>();

function serializedUpload<T>(sim: SimCore, step: () => Promise<T>): Promise<T> {
  const run = (uploads.get(sim) ?? Promise.resolve()).then(step);
  uploads.set(
    sim,
    run.catch(() => undefined),
  );
  return run;
}

/** `{"releaseNotes":"<changelog>"}` with the changelog's bytes as Yojson writes a string. */
export function releaseNotesBody(changelog: Buffer): Buffer {
  return Buffer.from(`{"releaseNotes":${latin1JsonString(changelog)}}`, 'latin1');
}

export function updateRoutes(): Route[] {
  return [
    {
      method: 'POST',
      path: '/system/update',
      states: ['Operational'],
      access: ROOT_ADMIN,
      body: 'stream',
      produces: 'application/json',
      handler: async (ctx, sim): Promise<Reply> => {
        // Checked before the upload lock, as the firmware does: two concurrent uploads may both pass it.
        if (sim.pendingUpdate !== undefined) throw new SimHttpError(409, 'Update already in progress.');
        const accepted = await serializedUpload(sim, () => readUpdateImage(ctx.req, sim.updateKey, SIM_SOFTWARE_VERSION));
        sim.pendingUpdate = accepted.changelog;
        return { status: 200, bytes: releaseNotesBody(accepted.changelog), contentType: 'application/json' };
      },
    },
    {
      method: 'POST',
      path: '/system/commit-update',
      states: ['Operational'],
      access: ROOT_ADMIN,
      handler: (ctx, sim) => {
        if (sim.pendingUpdate === undefined) throw new SimHttpError(412, NO_UPDATE);
        afterResponse(sim, ctx.res, () => sim.power.reboot('commit-update'));
        return NO_CONTENT;
      },
    },
    {
      method: 'POST',
      path: '/system/cancel-update',
      states: ['Operational'],
      access: ROOT_ADMIN,
      handler: (_ctx, sim) => {
        if (sim.pendingUpdate === undefined) throw new SimHttpError(412, NO_UPDATE);
        sim.pendingUpdate = undefined;
        return NO_CONTENT;
      },
    },
  ];
}
