import { describe, it, expect } from 'vitest';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startProvisionedSimulator } from './fixture.js';
import { startSimulator } from './server.js';
import { TEST_KDF } from './crypto.js';
import { TestHttp } from './test-http.js';
import { checkLatencyTable, parseLatencySpec } from './latency.js';

describe('data directory persistence', () => {
  it('keeps users, keys, identity and certificate across a restart, coming back Locked (or Operational with unattended boot)', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-'));
    try {
      const a = await startProvisionedSimulator({ dataDir: dir });
      const ha = new TestHttp(a);
      await ha.req('POST', '/keys/generate', { auth: a.users.admin, json: { type: 'EC_P256', mechanisms: ['ECDSA_Signature'], id: 'persist' } });
      const info = (await ha.req('GET', '/system/info', { auth: a.users.admin })).json();
      await ha.close();
      await a.close();
      await a.close(); // idempotent
      // The state on disk holds sealed values only: no passphrase or key id in the clear besides paths.
      const onDisk = await readFile(path.join(dir, 'kv.json'), 'utf8');
      expect(onDisk).not.toContain('adminPassphrase');

      const b = await startSimulator({ dataDir: dir, unlockScrypt: TEST_KDF, backupScrypt: TEST_KDF });
      const hb = new TestHttp(b);
      try {
        expect(b.fingerprint256).toBe(a.fingerprint256);
        expect((await hb.req('GET', '/health/state')).json()).toEqual({ state: 'Locked' });
        expect((await hb.req('POST', '/unlock', { json: { passphrase: a.unlockPassphrase } })).status).toBe(204);
        expect((await hb.req('GET', '/system/info', { auth: a.users.admin })).json()).toEqual(info);
        expect((await hb.req('GET', '/keys', { auth: a.users.operator })).json()).toEqual([{ id: 'persist' }]);
        expect((await hb.req('PUT', '/config/unattended-boot', { auth: a.users.admin, json: { status: 'on' } })).status).toBe(204);
      } finally {
        await hb.close();
        await b.close();
      }
      const c = await startSimulator({ dataDir: dir, unlockScrypt: TEST_KDF });
      const hc = new TestHttp(c);
      try {
        expect((await hc.req('GET', '/health/state')).json()).toEqual({ state: 'Operational' });
      } finally {
        await hc.close();
        await c.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a data directory whose state file is not a simulator dump', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-'));
    try {
      await (await import('node:fs/promises')).writeFile(path.join(dir, 'kv.json'), '[1,2]');
      await expect(startSimulator({ dataDir: dir })).rejects.toThrow(/not a simulator KV dump/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('latency specs', () => {
  it('parses ms and s, and names a bad item', () => {
    expect(parseLatencySpec('sign=40ms, generate=1.5s,decrypt=3')).toEqual({ sign: 40, generate: 1500, decrypt: 3 });
    expect(() => parseLatencySpec('sign')).toThrow(/"sign" is not <operation>=<number>/);
    expect(() => parseLatencySpec('sign=-1ms')).toThrow();
    expect(() => parseLatencySpec('sign=11m')).toThrow();
    expect(() => checkLatencyTable({ sign: -5 })).toThrow(/non-negative/);
  });
});

describe('durable writes', () => {
  // No await between the change and the read: what is on disk then is what a SIGKILL at that instant would leave.
  it('with durable, a change is in kv.json before the call that made it returns; without, only after the debounce', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-sim-'));
    try {
      const { KvStore } = await import('./kv.js');
      const { readFileSync, existsSync } = await import('node:fs');
      const file = path.join(dir, 'kv.json');
      const lazy = await KvStore.open(dir);
      lazy.set('/lazy', Buffer.from('x'));
      expect(existsSync(file)).toBe(false);
      await lazy.flush();
      const durable = await KvStore.open(dir, { durable: true });
      durable.set('/key/one', Buffer.from('1'));
      expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')) as object).sort()).toEqual(['/key/one', '/lazy']);
      durable.batch([['/key/two', Buffer.from('2')]], ['/lazy']);
      expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')) as object).sort()).toEqual(['/key/one', '/key/two']);
      durable.delete('/key/one');
      expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')) as object)).toEqual(['/key/two']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
