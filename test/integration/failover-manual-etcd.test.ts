/**
 * The operator's commands (`promote`, `demote --to`, `pause`/`resume`, through `bin/nethsm-replicator` and the admin
 * socket, as typed) with automatic failover on (a real etcd cluster: sites a and b plus a witness) and off. With it
 * on they work through the leader key: a switchover moves the key without a gap (a watch on it sees no delete), a
 * paused replica never takes the key by itself, and an operator's promote takes a vacant key. Needs `npm run build`.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { cliError, runCli } from '../faults/cli.js';
import { EtcdCluster, etcdBinary } from '../helpers/etcd-cluster.js';
import { waitFor } from '../helpers/wait.js';

const TTL_MS = 6_000;
const PREFIX = '/nhr-manual';
const built = existsSync(path.resolve(import.meta.dirname, '../../dist/cli/main.js'));
const cli = (lab: Lab, site: string, ...args: string[]) => runCli([...args, '--config', path.join(lab.site(site).dir, 'config.yaml')], 90_000);

describe.skipIf(!built)('operator commands with automatic failover off and on (needs `npm run build`)', () => {
  let etcd: EtcdCluster | undefined;
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    await etcd?.stop();
    lab = undefined;
    etcd = undefined;
  });

  it('automatic failover off: demote --to, pause, and promote after the primary is lost still work', async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    const demote = await cli(lab, 'a', 'demote', 'alpha', '--to', 'b');
    expect(demote.code, cliError(demote)).toBe(0);
    expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
    expect((await cli(lab, 'a', 'pause', 'alpha')).code).toBe(0);
    expect(a.daemon!.ctx.store.roles.require('alpha').paused).toBe(true);
    expect((await cli(lab, 'a', 'resume', 'alpha')).code).toBe(0);
    await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.primarySite === 'b' && a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica', 'a to follow b', 30_000, 50);
    await a.daemon!.syncer.sync('alpha', { actor: 'test' });
    await b.stop();
    const promote = await cli(lab, 'a', 'promote', 'alpha');
    expect(promote.code, cliError(promote)).toBe(0);
    expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 3, primarySite: 'a' });
  }, 180_000);

  describe.skipIf(!etcdBinary)(`automatic failover on (${etcdBinary ? 'real etcd' : 'SKIPPED: no etcd binary on PATH; apt-get install etcd-server'})`, () => {
    it('promote is refused while another site holds the key; demote --to moves the key without a gap; a paused replica does not take it; promote takes a vacant key', async () => {
      etcd = await EtcdCluster.start(['a', 'b', 'witness']);
      const e = etcd;
      lab = await Lab.create({
        namespaces: [{ name: 'alpha', primary: 'a', failover: 'automatic' }],
        etcd: (site) => ({ endpoints: e.endpoints([site, 'witness']), leaseTtl: `${TTL_MS / 1000}s`, safetyMargin: '2s', prefix: PREFIX }),
      });
      await lab.startDaemons();
      const [a, b] = [lab.site('a'), lab.site('b')];
      await waitFor(() => a.daemon!.leadership!.status('alpha')?.state === 'primary: holds the leader key', 'a to hold the key', 20_000, 50);
      await b.daemon!.syncer.sync('alpha', { actor: 'test' });

      // promote at the replica while a holds the key: refused, nothing changes.
      const refused = await cli(lab, 'b', 'promote', 'alpha');
      expect(refused.code).not.toBe(0);
      expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 1 });

      // switchover: every change of the leader key is a put (never a delete: never vacant), ending with b's record.
      const client = new Etcd3({ hosts: e.endpoints() });
      const events: string[] = [];
      const watcher = await client.watch().key(`${PREFIX}/ns/alpha/leader`).create();
      watcher.on('put', (kv) => events.push(`put ${kv.value.toString()}`));
      watcher.on('delete', () => events.push('delete'));
      try {
        const demote = await cli(lab, 'a', 'demote', 'alpha', '--to', 'b');
        expect(demote.code, cliError(demote)).toBe(0);
        await waitFor(() => events.some((x) => x.includes('"site":"b"')), 'the key to name b', 10_000, 50);
        expect(events.filter((x) => x === 'delete')).toEqual([]);
        expect(events.at(-1)).toBe('put {"site":"b","epoch":2}');
      } finally {
        await watcher.cancel();
        client.close();
      }
      expect(b.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 2, primarySite: 'b' });
      await waitFor(() => a.daemon!.ctx.store.roles.get('alpha')?.role === 'replica' && a.daemon!.ctx.store.roles.get('alpha')?.primarySite === 'b', 'a to follow b', 30_000, 50);
      await a.daemon!.syncer.sync('alpha', { actor: 'test' });

      // pause at the replica, then lose the primary: its lease expires, but a paused replica does not take the key.
      expect((await cli(lab, 'a', 'pause', 'alpha')).code).toBe(0);
      await b.stop();
      await new Promise((r) => setTimeout(r, 2 * TTL_MS));
      expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'replica', epoch: 2 });
      expect(a.daemon!.leadership!.status('alpha')?.state).toMatch(/paused/);

      // the operator promotes: the key is vacant, so it is taken at a new epoch.
      const promote = await cli(lab, 'a', 'promote', 'alpha');
      expect(promote.code, cliError(promote)).toBe(0);
      expect(a.daemon!.ctx.store.roles.require('alpha')).toMatchObject({ role: 'primary', epoch: 3, primarySite: 'a' });
      await waitFor(() => a.daemon!.leadership!.status('alpha')?.leader?.site === 'a', "a's status to name itself leader", 20_000, 50);
    }, 240_000);
  });
});
