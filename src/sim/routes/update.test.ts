import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPairSync } from 'node:crypto';
import { startProvisionedSimulator, type ProvisionedSimulator } from '../fixture.js';
import { TestHttp } from '../test-http.js';
import { signUpdateImage } from '../update/image.js';
import { startSimulator } from '../server.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const fixture = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'update', 'update.bin');
const present = existsSync(fixture);
if (!present) console.warn(`update fixture absent at ${fixture}: the default-key upload test is skipped`);

const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const updateKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const image = (version: string, changelog: string | Buffer = 'new things\n'): Buffer =>
  signUpdateImage({ privateKey, changelog, version, image: Buffer.from('system image') });

async function withSim(f: (sim: ProvisionedSimulator, http: TestHttp) => Promise<void>): Promise<void> {
  const sim = await startProvisionedSimulator({ updateKeyPem, namespaces: ['ns1'] });
  const http = new TestHttp(sim);
  try {
    await f(sim, http);
  } finally {
    await http.close();
    await sim.close();
  }
}

describe('POST /system/update, commit-update, cancel-update', () => {
  it('accepts a signed image (200 releaseNotes), refuses a second upload with 409 until cancelled, then accepts again', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      // No Content-Type needed: the firmware never checks it on these POSTs.
      const r = await http.req('POST', '/system/update', { auth: admin, body: image('6.0') });
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.text).toBe('{"releaseNotes":"new things\\n"}');
      const again = await http.req('POST', '/system/update', { auth: admin, body: image('7.0') });
      expect([again.status, again.json()]).toEqual([409, { message: 'Update already in progress.' }]);
      expect((await http.req('POST', '/system/cancel-update', { auth: admin })).status).toBe(204);
      const none = await http.req('POST', '/system/cancel-update', { auth: admin });
      expect([none.status, none.json()]).toEqual([412, { message: 'No update available. Please upload a system image to /system/update.' }]);
      expect((await http.req('POST', '/system/update', { auth: admin, body: image('5.3') })).status).toBe(200);
    });
  });

  it('writes release notes as the firmware JSON writer does: raw high bytes, \\u00XX controls', async () => {
    await withSim(async (sim, http) => {
      const notes = Buffer.from([0x41, 0x22, 0x5c, 0x01, 0x7f, 0x09, 0xc3, 0xa9, 0xff]);
      const r = await http.req('POST', '/system/update', { auth: sim.users.admin, body: image('5.1', notes) });
      expect(r.status).toBe(200);
      expect(r.body).toEqual(Buffer.concat([Buffer.from('{"releaseNotes":"A\\"\\\\\\u0001\\u007f\\t', 'latin1'), Buffer.from([0xc3, 0xa9, 0xff]), Buffer.from('"}')]));
    });
  });

  it('answers 400/409 for bad images and keeps nothing pending', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const cases: Array<[Buffer, number, string]> = [
        [Buffer.from('hello'), 400, 'Unexpected end of data'],
        [Buffer.from('_NETHSM_UPDATE_\x01' + 'x'.repeat(100)), 400, 'Invalid update file'],
        [image('6'), 400, "Failed to parse version: no separator (.). A valid version would be '4.2'."],
        [image('6.0').subarray(0, -1), 400, 'unexpected end of data'],
        [image('4.9'), 409, 'Software version downgrade not allowed.'],
        [signUpdateImage({ privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, changelog: 'x', version: '6.0', image: Buffer.alloc(1) }), 400, 'Signature check of update image failed.'],
      ];
      for (const [body, status, message] of cases) {
        const r = await http.req('POST', '/system/update', { auth: admin, body });
        expect([r.status, r.json()], message).toEqual([status, { message }]);
      }
      expect((await http.req('POST', '/system/commit-update', { auth: admin })).status).toBe(412);
    });
  });

  it('commit answers 204 and reboots; the software version stays and the pending upload is gone', async () => {
    await withSim(async (sim, http) => {
      const admin = sim.users.admin;
      const info = (await http.req('GET', '/system/info', { auth: admin })).json() as { softwareVersion: string };
      expect((await http.req('POST', '/system/update', { auth: admin, body: image('9.0') })).status).toBe(200);
      const boots = sim.boots;
      const c = await http.req('POST', '/system/commit-update', { auth: admin });
      expect([c.status, c.body.length]).toEqual([204, 0]);
      await sim.waitForBoot(boots + 1);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(204);
      expect(((await http.req('GET', '/system/info', { auth: admin })).json() as { softwareVersion: string }).softwareVersion).toBe(info.softwareVersion);
      expect((await http.req('POST', '/system/cancel-update', { auth: admin })).status).toBe(412);
    });
  });

  it('refuses: 412 when not Operational, 401/403 for the wrong callers, 406 for an Accept without JSON', async () => {
    await withSim(async (sim, http) => {
      for (const p of ['/system/update', '/system/commit-update', '/system/cancel-update']) {
        expect((await http.req('POST', p, { body: image('6.0') })).status, p).toBe(401);
        expect((await http.req('POST', p, { auth: sim.users.operator, body: image('6.0') })).status, p).toBe(403);
        expect((await http.req('POST', p, { auth: sim.nsUsers['ns1']!.admin, body: image('6.0') })).status, p).toBe(403);
      }
      const r = await http.req('POST', '/system/update', { auth: sim.users.admin, body: image('6.0'), headers: { accept: 'text/plain' } });
      expect(r.status).toBe(406);
      await http.req('POST', '/lock', { auth: sim.users.admin });
      for (const p of ['/system/update', '/system/commit-update', '/system/cancel-update']) {
        expect((await http.req('POST', p, { body: image('6.0') })).status, p).toBe(412);
      }
    });
  });

  it.skipIf(!present)("accepts the firmware test suite's update.bin with the default (test) key", async () => {
    const sim = await startProvisionedSimulator();
    const http = new TestHttp(sim);
    try {
      const r = await http.req('POST', '/system/update', { auth: sim.users.admin, body: readFileSync(fixture) });
      expect([r.status, r.text]).toEqual([200, '{"releaseNotes":"some cool new features\\n"}']);
    } finally {
      await http.close();
      await sim.close();
    }
  });

  it('refuses to start with an update key that is not an RSA public key', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    await expect(startSimulator({ updateKeyPem: ec })).rejects.toThrow(/update key must be an RSA public key/);
  });
});
