import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigSecretError } from '../errors.js';
import { parseConfig } from './parse.js';
import { loadSecrets } from './secrets.js';
import { toYaml, validConfigDoc } from './test-helpers.js';

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const dir = mkdtempSync(path.join(tmpdir(), 'nhr-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configWithFiles(edit?: (d: Doc) => void) {
  const doc = validConfigDoc() as Doc;
  doc.nethsm.credentials.admin.passphrase = { file: path.join(dir, 'admin') };
  doc.replication.backupPassphrase = { file: path.join(dir, 'backup-pp') };
  edit?.(doc);
  return parseConfig(toYaml(doc), {});
}

const ENV = { NHR_BACKUP_PW: 'backup-secret-1', NHR_REPLICATION_PW: 'replication-secret-2', NHR_PAYMENTS_PW: 'payments-secret-3' };

describe('loadSecrets', () => {
  it('reads secrets from files (dropping one trailing newline) and the environment', async () => {
    writeFileSync(path.join(dir, 'admin'), 'admin-secret-4\n');
    writeFileSync(path.join(dir, 'backup-pp'), 'backup-pp-secret-5\r\n');
    const s = await loadSecrets(configWithFiles(), ENV);
    expect(s.nethsm.backup).toEqual({ username: 'backup', password: 'backup-secret-1' });
    expect(s.nethsm.admin).toEqual({ username: 'admin', password: 'admin-secret-4' });
    expect(s.nethsm.metrics).toBeUndefined();
    expect(s.nethsm.operator).toBeUndefined();
    expect(s.namespaces.payments).toEqual({ username: 'payments~replicator', password: 'payments-secret-3' });
    expect(s.replication).toEqual({ passphrase: 'replication-secret-2', backupPassphrase: 'backup-pp-secret-5' });
    expect(Object.isFrozen(s.nethsm)).toBe(true);
  });

  it('keeps inner whitespace and all but one trailing newline', async () => {
    writeFileSync(path.join(dir, 'admin'), ' two words \n\n');
    writeFileSync(path.join(dir, 'backup-pp'), 'x');
    const s = await loadSecrets(configWithFiles(), ENV);
    expect(s.nethsm.admin.password).toBe(' two words \n');
  });

  it('uses the injected file reader', async () => {
    const read: string[] = [];
    const s = await loadSecrets(configWithFiles(), ENV, (p) => {
      read.push(p);
      return Buffer.from(`from-${path.basename(p)}`);
    });
    expect(read.sort()).toEqual([path.join(dir, 'admin'), path.join(dir, 'backup-pp')]);
    expect(s.replication.backupPassphrase).toBe('from-backup-pp');
  });

  it('resolves inline secrets when insecureInline allowed them', async () => {
    const c = configWithFiles((d) => {
      d.insecureInline = true;
      d.nethsm.credentials.admin.passphrase = 'inline-admin';
      d.replication.backupPassphrase = 'inline-backup';
    });
    const s = await loadSecrets(c, ENV);
    expect(s.nethsm.admin.password).toBe('inline-admin');
  });

  it('names every missing file, unset variable and empty secret by path, never a value', async () => {
    writeFileSync(path.join(dir, 'backup-pp'), '\n');
    const c = configWithFiles((d) => {
      d.nethsm.credentials.admin.passphrase = { file: path.join(dir, 'missing') };
    });
    const env = { NHR_BACKUP_PW: 'backup-secret-1', NHR_PAYMENTS_PW: '' };
    let err: unknown;
    try {
      await loadSecrets(c, env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigSecretError);
    const msg = (err as Error).message;
    expect(msg).toContain(`nethsm.credentials.admin.passphrase: file ${path.join(dir, 'missing')} cannot be read (ENOENT)`);
    expect(msg).toContain('replication.passphrase: environment variable NHR_REPLICATION_PW is not set');
    expect(msg).toContain('namespaces[0].replicationUser.passphrase: environment variable NHR_PAYMENTS_PW is empty');
    expect(msg).toContain(`replication.backupPassphrase: file ${path.join(dir, 'backup-pp')} is empty`);
    expect(msg).toMatch(/^cannot read 4 secrets/);
    expect(msg).not.toContain('backup-secret-1');
    expect(JSON.stringify((err as ConfigSecretError).toJSON())).not.toContain('backup-secret-1');
  });

  it('does not echo what a failing reader said (it could quote the file)', async () => {
    const c = configWithFiles();
    const err = await loadSecrets(c, ENV, () => {
      throw Object.assign(new Error('EACCES: the file says hunter2'), { code: 'EACCES' });
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigSecretError);
    expect((err as Error).message).toContain('cannot be read (EACCES)');
    expect((err as Error).message).not.toContain('hunter2');
    expect((err as Error).cause).toBeUndefined();
  });
});
