import { describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect } from 'node:net';
import { startProvisionedSimulator } from '../fixture.js';
import { startSimulator } from '../server.js';
import { TestHttp } from '../test-http.js';
import { TEST_KDF } from '../crypto.js';

/** Whether a TCP connection to the port is refused (nothing listening). */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

describe('POST /system/reboot', () => {
  it('answers 204, drops the listener, comes back Locked with the data, counters flushed and RAM state gone', async () => {
    const sim = await startProvisionedSimulator();
    const http = new TestHttp(sim);
    const { admin, operator, metrics } = sim.users;
    try {
      await http.req('POST', '/keys/generate', { auth: admin, json: { type: 'Curve25519', mechanisms: ['EdDSA_Signature'], id: 'k1' } });
      expect((await http.req('POST', '/keys/k1/sign', { auth: operator, json: { mode: 'EdDSA', message: 'aGk=' } })).status).toBe(200);
      const before = Number((((await http.req('GET', '/metrics', { auth: metrics })).json()) as Record<string, string>)['http response total']);
      expect(before).toBeGreaterThan(5);
      const boots = sim.boots;
      const r = await http.req('POST', '/system/reboot', { auth: admin });
      expect(r.status).toBe(204);
      expect(r.body).toHaveLength(0);
      expect(r.headers['cache-control']).toBe('no-cache');
      await sim.waitForBoot(boots + 1);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(204);
      // The operation counter was written to the store before the reboot.
      expect(((await http.req('GET', '/keys/k1', { auth: admin })).json() as { operations: number }).operations).toBe(1);
      // Metrics start again from zero.
      const after = Number((((await http.req('GET', '/metrics', { auth: metrics })).json()) as Record<string, string>)['http response total']);
      expect(after).toBeLessThan(before);
    } finally {
      await http.close();
      await sim.close();
    }
  });

  it('comes back Operational when unattended boot is on', async () => {
    const sim = await startProvisionedSimulator();
    const http = new TestHttp(sim);
    try {
      await http.req('PUT', '/config/unattended-boot', { auth: sim.users.admin, json: { status: 'on' } });
      const boots = sim.boots;
      expect((await http.req('POST', '/system/reboot', { auth: sim.users.admin })).status).toBe(204);
      await sim.waitForBoot(boots + 1);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
    } finally {
      await http.close();
      await sim.close();
    }
  });

  it('refuses: 412 when not Operational (before auth), 401 without credentials, 403 for operators and namespaced admins', async () => {
    const sim = await startProvisionedSimulator({ namespaces: ['ns1'] });
    const http = new TestHttp(sim);
    try {
      for (const p of ['/system/reboot', '/system/factory-reset']) {
        expect((await http.req('POST', p)).status).toBe(401);
        expect((await http.req('POST', p, { auth: sim.users.operator })).status).toBe(403);
        const ns = await http.req('POST', p, { auth: sim.nsUsers['ns1']!.admin });
        expect([ns.status, ns.body.length]).toEqual([403, 0]);
        expect((await http.req('GET', p, { auth: sim.users.admin })).status).toBe(405);
      }
      await http.req('POST', '/lock', { auth: sim.users.admin });
      for (const p of ['/system/reboot', '/system/factory-reset']) {
        const r = await http.req('POST', p);
        expect([r.status, r.json()]).toEqual([412, { message: 'Service not available' }]);
      }
      expect(sim.boots).toBe(1);
    } finally {
      await http.close();
      await sim.close();
    }
  });
});

describe('POST /system/shutdown', () => {
  it('needs no credentials outside Operational, stops serving, and powerOn() brings it back', async () => {
    const changes: string[] = [];
    const sim = await startSimulator({ unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF, onPowerChange: (s, why) => changes.push(`${s}:${why}`) });
    const http = new TestHttp(sim);
    try {
      expect(sim.power).toBe('on');
      expect((await http.req('POST', '/system/shutdown', { body: 'ignored', headers: { 'content-type': 'text/plain' } })).status).toBe(204);
      await waitUntil(() => sim.power === 'off');
      expect(await refused(sim.port)).toBe(true);
      await sim.powerOn();
      await sim.powerOn(); // no-op while on
      expect(sim.power).toBe('on');
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Unprovisioned' });
      expect(changes).toEqual(['on:start', 'off:shutdown', 'on:power-on']);
    } finally {
      await http.close();
      await sim.close();
    }
  });

  it('needs the root Administrator when Operational, and keeps the data across the power cycle', async () => {
    const sim = await startProvisionedSimulator();
    const http = new TestHttp(sim);
    try {
      expect((await http.req('POST', '/system/shutdown')).status).toBe(401);
      expect((await http.req('POST', '/system/shutdown', { auth: sim.users.operator })).status).toBe(403);
      expect(sim.power).toBe('on');
      expect((await http.req('POST', '/system/shutdown', { auth: sim.users.admin })).status).toBe(204);
      await waitUntil(() => sim.power === 'off');
      await sim.powerOn();
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
      expect((await http.req('POST', '/unlock', { json: { passphrase: sim.unlockPassphrase } })).status).toBe(204);
      expect((await http.req('GET', '/users/operator', { auth: sim.users.admin })).status).toBe(200);
    } finally {
      await http.close();
      await sim.close();
    }
  });
});

describe('options', () => {
  it('refuses a negative or non-finite reboot delay', async () => {
    await expect(startSimulator({ rebootDelayMs: -1 })).rejects.toThrow(/rebootDelayMs must be a non-negative/);
    await expect(startSimulator({ rebootDelayMs: Number.NaN })).rejects.toThrow(/rebootDelayMs must be a non-negative/);
  });

  it('keeps the simulator unreachable for the reboot delay', async () => {
    const sim = await startProvisionedSimulator({ rebootDelayMs: 1500 });
    const http = new TestHttp(sim);
    try {
      const boots = sim.boots;
      expect((await http.req('POST', '/system/reboot', { auth: sim.users.admin })).status).toBe(204);
      await waitUntil(() => sim.power === 'off');
      expect(await refused(sim.port)).toBe(true);
      await sim.waitForBoot(boots + 1);
      expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
    } finally {
      await http.close();
      await sim.close();
    }
  });
});

describe('close()', () => {
  it('stops listening, also after power transitions, and later power requests do nothing', async () => {
    const sim = await startSimulator({ unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF });
    await sim.close();
    expect(await refused(sim.port)).toBe(true);
    await sim.powerOn();
    expect(await refused(sim.port)).toBe(true);
  });
});

describe('POST /system/factory-reset', () => {
  it('wipes the store and comes back Unprovisioned with a new TLS certificate, a new device key and default config', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-reset-'));
    try {
      const sim = await startProvisionedSimulator({ dataDir: dir });
      const http = new TestHttp(sim, { insecure: true });
      try {
        const admin = sim.users.admin;
        await http.req('PUT', '/config/network', { auth: admin, json: { ipAddress: '10.0.0.5', netmask: '255.0.0.0', gateway: '10.0.0.1' } });
        const info = (await http.req('GET', '/system/info', { auth: admin })).json() as { deviceId: string };
        const oldFingerprint = sim.fingerprint256;
        const oldDevice = JSON.parse(await readFile(path.join(dir, 'device.json'), 'utf8')) as { deviceId: string; deviceKey: string };
        const boots = sim.boots;
        expect((await http.req('POST', '/system/factory-reset', { auth: admin })).status).toBe(204);
        await sim.waitForBoot(boots + 1);
        expect((await http.req('GET', '/health/state')).json()).toEqual({ state: 'Unprovisioned' });
        expect(sim.fingerprint256).not.toBe(oldFingerprint);
        const newDevice = JSON.parse(await readFile(path.join(dir, 'device.json'), 'utf8')) as { deviceId: string; deviceKey: string };
        expect(newDevice.deviceId).toBe(oldDevice.deviceId);
        expect(newDevice.deviceKey).not.toBe(oldDevice.deviceKey);
        const kv = JSON.parse(await readFile(path.join(dir, 'kv.json'), 'utf8')) as Record<string, string>;
        // On disk: nothing but what the new boot writes (the marker and the fresh TLS identity, once flushed).
        expect(Object.keys(kv).filter((p) => p !== '/.initialized' && !p.endsWith('/config/certificate') && !p.endsWith('/config/private-key'))).toEqual([]);

        // Provisioned again: same device id, default network, nothing of the old users.
        const p = await http.req('POST', '/provision', { json: { unlockPassphrase: 'unlockPassphrase2', adminPassphrase: 'adminPassphrase2', systemTime: '2025-01-01T00:00:00Z' } });
        expect(p.status).toBe(204);
        const admin2 = { username: 'admin', password: 'adminPassphrase2' };
        expect(((await http.req('GET', '/system/info', { auth: admin2 })).json() as { deviceId: string }).deviceId).toBe(info.deviceId);
        expect((await http.req('GET', '/config/network', { auth: admin2 })).json()).toEqual({ ipAddress: '192.168.1.1', netmask: '255.255.255.0', gateway: '0.0.0.0' });
        expect((await http.req('GET', '/users', { auth: admin2 })).json()).toEqual([{ user: 'admin' }]);
      } finally {
        await http.close();
        await sim.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error('condition not reached');
}
