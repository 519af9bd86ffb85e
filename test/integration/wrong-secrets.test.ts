/**
 * Wrong secrets are reported where and when the daemon meets them, naming the setting: a refused root Administrator at
 * start (readiness false, status PROBLEM), a device backup passphrase or replication passphrase that does not open a
 * file (the error names replication.backupPassphrase or replication.passphrase). Two sites over real HTTPS (simulators).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { renderStatus, statusExitCode } from '../../src/cli/status.js';
import { parseConfig } from '../../src/config/parse.js';
import { loadSecrets } from '../../src/config/secrets.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { BackupWrongPassphraseError } from '../../src/errors.js';
import { Lab, LAB_PASSPHRASES } from '../../src/lab/lab.js';

describe('wrong secrets are named when the daemon meets them', () => {
  let lab: Lab;
  const extra: Daemon[] = [];

  /** A daemon of `site` (not started) from its lab config with `from` replaced by `to` (one secret changed). */
  async function daemonWith(site: string, from: string, to: string): Promise<Daemon> {
    const s = lab.site(site);
    const text = await readFile(path.join(s.dir, 'config.yaml'), 'utf8');
    expect(text).toContain(from);
    const config = parseConfig(text.replace(`"${from}"`, JSON.stringify(to)), {}, { baseDir: s.dir });
    const d = new Daemon({ config, secrets: await loadSecrets(config, {}), scrypt: TEST_SCRYPT, transportKeyBits: 2048 });
    extra.push(d);
    return d;
  }

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
  });

  afterAll(async () => {
    await Promise.all(extra.map((d) => d.close()));
    await lab?.close();
  });

  it('a refused nethsm-admin credential: not ready at once, with the cause, and a PROBLEM in status', async () => {
    const d = await daemonWith('a', LAB_PASSPHRASES.admin, 'not-the-admin-passphrase');
    await d.start();
    try {
    const r = await request(`http://127.0.0.1:${d.ports.health}/health/ready`);
    const body = (await r.body.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> };
    expect(r.statusCode).toBe(503);
    expect(body.ready).toBe(false);
    expect(body.checks.credentials).toEqual({ ok: false, detail: 'the NetHSM refused the nethsm-admin credential (nethsm.credentials.admin) for user admin' });
    const status = await d.status();
    expect(status.credentials).toEqual([expect.objectContaining({ setting: 'nethsm.credentials.admin', name: 'nethsm-admin', user: 'admin', critical: true })]);
    expect(status.credentials![0]!.error).toMatch(/^the NetHSM refused the nethsm-admin credential \(nethsm\.credentials\.admin\) for user admin: 401 Unauthorized on (GET|POST) \/\S+$/);
    expect(statusExitCode(status)).toBe(2);
    const text = renderStatus(status);
    expect(text).toMatch(/PROBLEM: the NetHSM refused the nethsm-admin credential \(nethsm\.credentials\.admin\) for user admin \(since (now|[\d.]+s ago)\): fix that secret, then restart the daemon/);
    expect(text).not.toContain('all ok');
    expect(JSON.stringify(status)).not.toContain('not-the-admin-passphrase');
    } finally {
      await d.close();
    }
  });

  it('a wrong replication.passphrase: the sync fails naming it, not just NHR_ERR_BACKUP_WRONG_PASSPHRASE', async () => {
    // The NetHSM refuses a user for a second after a failed login (FACTS §10.1): let the refusal above pass.
    await new Promise((r) => setTimeout(r, 1100));
    await lab.site('a').startDaemon();
    const b = await daemonWith('b', LAB_PASSPHRASES.replication, 'not-the-group-passphrase');
    await b.start();
    const err = await b.syncer.sync('alpha', { actor: 'test', manual: true }).catch((e: unknown) => e).finally(() => b.close());
    expect(err).toBeInstanceOf(BackupWrongPassphraseError);
    const e = err as BackupWrongPassphraseError;
    expect(e.message).toMatch(/^the passphrase of replication\.passphrase does not open this backup/);
    expect(e.hint).toMatch(/^replication\.passphrase must be the same at every site of the replication group/);
  });

  it('a wrong replication.backupPassphrase: the sync fails naming it', async () => {
    const b = await daemonWith('b', LAB_PASSPHRASES.backup, 'not-the-device-backup-passphrase');
    await b.start();
    const err = await b.syncer.sync('alpha', { actor: 'test', manual: true }).catch((e: unknown) => e).finally(() => b.close());
    expect(err).toBeInstanceOf(BackupWrongPassphraseError);
    const e = err as BackupWrongPassphraseError;
    expect(e.message).toMatch(/^the passphrase of replication\.backupPassphrase does not open this backup/);
    expect(e.hint).toMatch(/^replication\.backupPassphrase must be this site's NetHSM backup passphrase/);
  });
});
