import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AdminRemoteError, AdminUnavailableError, NhrError } from '../errors.js';
import { AdminClient } from './client.js';
import { AdminServer, type AdminHandlers } from './server.js';

class RefusedForTest extends NhrError {
  static override readonly code = 'NHR_ERR_ROLE_PROMOTE_REFUSED';
}

function handlers(calls: unknown[]): AdminHandlers {
  return {
    status: async () => ({ site: 'a', namespaces: [] }),
    sync: async (ns, req) => (calls.push(['sync', ns, req]), { started: true }),
    promote: async (ns, req) => {
      calls.push(['promote', ns, req]);
      if (!req.force) throw new RefusedForTest('replica is 600 s behind (limit 300 s)', { namespace: ns, epoch: 3, hint: 'Use --force.' });
      return { epoch: 4 };
    },
    demote: async (ns, req) => (calls.push(['demote', ns, req]), {}),
    pause: async (ns) => (calls.push(['pause', ns]), {}),
    resume: async (ns) => (calls.push(['resume', ns]), {}),
    restoreAdmins: async (ns, req) => (calls.push(['restore-admins', ns, req]), { namespace: ns, outcome: 'nothing-pending' }),
    quarantineList: async () => ({ directory: '/q', files: [] }),
    quarantineAck: async (req) => (calls.push(['quarantine-ack', req]), { file: req.file }),
  };
}

describe('admin API over a unix socket', () => {
  let dir: string;
  let server: AdminServer;
  let client: AdminClient;
  const calls: unknown[] = [];

  beforeEach(async () => {
    calls.length = 0;
    dir = await mkdtemp(join(tmpdir(), 'nhr-admin-'));
    server = new AdminServer({ socketPath: join(dir, 'admin.sock'), handlers: handlers(calls) });
    await server.start();
    await server.start(); // idempotent
    client = new AdminClient({ socketPath: join(dir, 'admin.sock'), timeoutMs: 5000 });
  });

  afterEach(async () => {
    await server.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the socket with mode 0600', async () => {
    const st = await stat(join(dir, 'admin.sock'));
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('serves status and namespace actions with validated bodies', async () => {
    expect(await client.status()).toEqual({ site: 'a', namespaces: [] });
    expect(await client.namespaceAction('alpha', 'sync', { actor: 'op@host' })).toEqual({ started: true });
    expect(await client.namespaceAction('alpha', 'promote', { actor: 'op@host', force: true })).toEqual({ epoch: 4 });
    expect(calls).toEqual([
      ['sync', 'alpha', { actor: 'op@host', onExisting: 'refuse', force: false }],
      ['promote', 'alpha', { actor: 'op@host', force: true }],
    ]);
  });

  it("carries the daemon's error code, hint and context back to the CLI", async () => {
    const err = await client.namespaceAction('alpha', 'promote', { actor: 'op' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminRemoteError);
    const e = err as AdminRemoteError;
    expect(e.code).toBe('NHR_ERR_ROLE_PROMOTE_REFUSED');
    expect(e.hint).toBe('Use --force.');
    expect(e.namespace).toBe('alpha');
    expect(e.epoch).toBe(3);
    expect(e.retryable).toBe(false);
  });

  it("passes sync's onExisting through and refuses a value other than refuse or remove", async () => {
    await client.namespaceAction('alpha', 'sync', { actor: 'op', onExisting: 'remove' });
    expect(calls).toEqual([['sync', 'alpha', { actor: 'op', onExisting: 'remove', force: false }]]);
    const err = (await client.namespaceAction('alpha', 'sync', { actor: 'op', onExisting: 'merge' }).catch((e: unknown) => e)) as AdminRemoteError;
    expect(err.code).toBe('NHR_ERR_INPUT_INVALID');
    expect(err.message).toMatch(/body\.onExisting/);
    expect(calls).toHaveLength(1);
  });

  it('serves the quarantine list and acknowledgements, refusing a malformed ack body', async () => {
    expect(await client.quarantineList()).toEqual({ directory: '/q', files: [] });
    expect(await client.quarantineAck({ actor: 'op', file: 'a-epoch1-x.nsbackup' })).toEqual({ file: 'a-epoch1-x.nsbackup' });
    for (const body of [{ actor: 'op' }, { actor: 'op', file: '' }, { actor: 'op', file: 'x'.repeat(256) }, { actor: 'op', file: 'f', extra: 1 }]) {
      const err = (await client.quarantineAck(body as { actor: string; file: string }).catch((e: unknown) => e)) as AdminRemoteError;
      expect(err.code).toBe('NHR_ERR_INPUT_INVALID');
      expect(err.message).toMatch(/^body/);
    }
    expect(calls).toEqual([['quarantine-ack', { actor: 'op', file: 'a-epoch1-x.nsbackup' }]]);
  });

  it('rejects malformed requests without calling the daemon', async () => {
    const bad: [string, Record<string, unknown>, RegExp][] = [
      ['alpha', { actor: 'op', force: 'yes' }, /body\.force/],
      ['alpha', { actor: 'op', unknown: 1 }, /body/],
      ['alpha', {}, /body\.actor/],
      ['.bad', { actor: 'op' }, /namespace is not a valid namespace id/],
    ];
    for (const [ns, body, msg] of bad) {
      const err = (await client.namespaceAction(ns, 'promote', body).catch((e: unknown) => e)) as AdminRemoteError;
      expect(err).toBeInstanceOf(AdminRemoteError);
      expect(err.code).toBe('NHR_ERR_INPUT_INVALID');
      expect(err.message).toMatch(msg);
    }
    // admins restore: the actor, an optional boolean `forget`, and a valid namespace id.
    for (const [ns, body, msg] of [['alpha', { actor: 'op', force: true }, /body/], ['alpha', {}, /body\.actor/], ['_x', { actor: 'op' }, /namespace is not a valid namespace id/], ['alpha', { actor: 'op', forget: 'yes' }, /body\.forget/], ['_x', { actor: 'op', forget: true }, /namespace is not a valid namespace id/]] as const) {
      const err = (await client.namespaceAction(ns, 'restore-admins', body).catch((e: unknown) => e)) as AdminRemoteError;
      expect(err.code).toBe('NHR_ERR_INPUT_INVALID');
      expect(err.message).toMatch(msg);
    }
    expect(calls).toEqual([]);
    expect(await client.namespaceAction('alpha', 'restore-admins', { actor: 'op@host' })).toEqual({ namespace: 'alpha', outcome: 'nothing-pending' });
    expect(calls).toEqual([['restore-admins', 'alpha', { actor: 'op@host' }]]);
    await client.namespaceAction('alpha', 'restore-admins', { actor: 'op@host', forget: true });
    expect(calls[1]).toEqual(['restore-admins', 'alpha', { actor: 'op@host', forget: true }]);
  });

  it('refuses to start over a live daemon and replaces a stale socket', async () => {
    const second = new AdminServer({ socketPath: join(dir, 'admin.sock'), handlers: handlers([]) });
    await expect(second.start()).rejects.toThrow(/another daemon is listening/);
    await server.close();
    // A crash leaves no listener; a plain file is never replaced.
    await writeFile(join(dir, 'not-a-socket'), 'x');
    const third = new AdminServer({ socketPath: join(dir, 'not-a-socket'), handlers: handlers([]) });
    await expect(third.start()).rejects.toThrow(/not a socket/);
  });

  it('says plainly when no daemon is running', async () => {
    const nobody = new AdminClient({ socketPath: join(dir, 'missing.sock') });
    const err = await nobody.status().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminUnavailableError);
    expect((err as AdminUnavailableError).hint).toMatch(/daemon running/);
  });
});
