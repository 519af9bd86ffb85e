/**
 * A quarantine file is a problem `status` reports (exit 2; readiness stays ready) and a gauge counts until an operator
 * has looked at it: `quarantine list` shows what it holds, `quarantine ack <file>` records (durably, audited) that
 * someone did. The ack takes a bare file name of the quarantine folder and nothing else.
 */
import { request } from 'node:http';
import { mkdir, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import { runCli } from '../../src/cli/test-run.js';
import { AdminRemoteError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient } from '../../src/nethsm/client.js';
import { use } from '../helpers/clients.js';

const gen = (id: string) => (c: NetHsmClient) => c.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] });
const admin = (s: LabSite) => new AdminClient({ socketPath: s.config.admin.socket, timeoutMs: 60_000 });

async function status(s: LabSite): Promise<{ text: string; code: number }> {
  const st = parseDaemonStatus(await admin(s).status());
  return { text: renderStatus(st), code: statusExitCode(st) };
}

function readyStatus(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/health/ready' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function gauge(s: LabSite): Promise<string> {
  return (await s.registry.metrics()).split('\n').filter((l) => l.startsWith('nethsm_replicator_quarantine_files_unacknowledged{')).join('\n');
}

async function refused(s: LabSite, file: string): Promise<AdminRemoteError> {
  const err = await admin(s).quarantineAck({ actor: 'op@test', file }).catch((e: unknown) => e);
  expect(err, file).toBeInstanceOf(AdminRemoteError);
  return err as AdminRemoteError;
}

describe('quarantine files until acknowledged', () => {
  let lab: Lab;
  let file: string;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    const b = lab.site('b');
    await use(lab.site('a').nsAdmin('alpha'), gen('a1'));
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    // Written straight to the replica's NetHSM: the next sync saves it to quarantine before its restore removes it.
    await use(b.client('alpha~replicator', LAB_PASSPHRASES.replicator), gen('foreign-1'));
    const r = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    file = path.basename((r as { quarantine?: string }).quarantine!);
  }, 120_000);

  afterAll(async () => {
    await lab?.close();
  });

  it('is a PROBLEM in status (exit 2) and counted by the gauge, while readiness stays ready', async () => {
    const b = lab.site('b');
    const st = await status(b);
    expect(st.code).toBe(2);
    expect(st.text).toContain(`PROBLEM: 1 quarantine file NOT ACKNOWLEDGED in ${b.daemon!.ctx.work.quarantine}: ${file}\nTry: See what each holds with \`nethsm-replicator quarantine list\``);
    expect(await gauge(b)).toBe('nethsm_replicator_quarantine_files_unacknowledged{namespace="alpha"} 1');
    expect(await readyStatus(b.daemon!.ports.health)).toBe(200);
  });

  it('lists what the file holds through the daemon: namespace, reason, epoch, key ids, when, not acknowledged', async () => {
    const b = lab.site('b');
    const list = (await admin(b).quarantineList()) as { files: Record<string, unknown>[] };
    expect(list.files).toEqual([
      expect.objectContaining({ file, namespace: 'alpha', reason: 'foreign_writes', epoch: 1, site: 'b', keys: 1, keyIds: ['foreign-1'], acknowledged: null, error: null }),
    ]);
    const cli = await runCli(['quarantine', 'list', '--socket', b.config.admin.socket]);
    expect(cli.code).toBe(0);
    expect(cli.out).toMatch(new RegExp(`${file.replace(/\./g, '\\.')}\\s+alpha\\s+foreign_writes\\s+1\\.\\d+\\s+b\\s+\\S+ \\((now|.* ago)\\)\\s+1\\s+0\\s+NO`));
    expect(cli.out).toContain('key ids: foreign-1');
    const json = await runCli(['quarantine', 'list', '--json', '--socket', b.config.admin.socket]);
    expect(JSON.parse(json.out)).toMatchObject({ files: [{ file, keyIds: ['foreign-1'] }] });
  });

  it('refuses a path, a traversal, a name of no file, a symlink or a folder, recording nothing', async () => {
    const b = lab.site('b');
    const q = b.daemon!.ctx.work.quarantine;
    await symlink(path.join(b.stateDir, 'state.db'), path.join(q, 'alpha-epoch9-link.nsbackup'));
    await mkdir(path.join(q, 'alpha-epoch9-dir.nsbackup'));
    for (const bad of ['../state.db', `../quarantine/${file}`, path.join(q, file), 'state.db', '.nsbackup', '..', `${file}\0`]) {
      expect((await refused(b, bad)).code, bad).toBe('NHR_ERR_INPUT_INVALID');
    }
    for (const missing of ['alpha-epoch1-nothing.nsbackup', 'alpha-epoch9-link.nsbackup', 'alpha-epoch9-dir.nsbackup']) {
      expect((await refused(b, missing)).code, missing).toBe('NHR_ERR_QUARANTINE_UNKNOWN_FILE');
    }
    // The CLI refuses before asking the daemon.
    const cli = await runCli(['quarantine', 'ack', '../state.db', '--socket', b.config.admin.socket]);
    expect(cli.code).toBe(1);
    expect(cli.err).toMatch(/quarantine file "\.\.\/state\.db" is a path; give the file name only.*\[NHR_ERR_INPUT_INVALID\]/);
    expect(b.daemon!.ctx.store.quarantineAcks.files()).toEqual(new Set());
    expect(b.daemon!.ctx.store.audit.list({}).filter((e) => e.action === 'quarantine-ack')).toEqual([]);
    // Neither the symlink nor the folder counts as a quarantine file.
    expect(((await admin(b).quarantineList()) as { files: unknown[] }).files).toHaveLength(1);
    expect(await gauge(b)).toBe('nethsm_replicator_quarantine_files_unacknowledged{namespace="alpha"} 1');
  });

  it('acknowledges it durably and audited: status all ok, gauge 0, a second ack changes nothing, kept across a restart', async () => {
    const b = lab.site('b');
    const cli = await runCli(['quarantine', 'ack', file, '--socket', b.config.admin.socket]);
    expect(cli.err).toBe('');
    expect(cli.out).toMatch(new RegExp(`^acknowledged ${file.replace(/\./g, '\\.')} \\(by \\S+@\\S+ at \\S+\\)\\n$`));
    let st = await status(b);
    expect(st.text).not.toContain('quarantine');
    expect(st.text).toMatch(/\nall ok\n$/);
    expect(st.code).toBe(0);
    expect(await gauge(b)).toBe('nethsm_replicator_quarantine_files_unacknowledged{namespace="alpha"} 0');

    const again = await runCli(['quarantine', 'ack', file, '--socket', b.config.admin.socket]);
    expect(again.out).toMatch(/was acknowledged already by/);
    const audit = b.daemon!.ctx.store.audit.list({}).filter((e) => e.action === 'quarantine-ack');
    expect(audit).toEqual([expect.objectContaining({ action: 'quarantine-ack', namespace: 'alpha', detail: { file } })]);
    expect(audit[0]!.actor).toMatch(/@/);

    await b.stopDaemon();
    await b.startDaemon();
    st = await status(b);
    expect(st.code).toBe(0);
    const list = (await admin(b).quarantineList()) as { files: { acknowledged: unknown }[] };
    expect(list.files[0]!.acknowledged).toEqual({ at: expect.any(String), actor: audit[0]!.actor });
  });
});
