/**
 * `check-config` at a site of a running group checks every credential and passphrase it can without harm, against the
 * real peer daemon's passphrase check (not a test handler) and the site's own NetHSM (simulator over HTTPS).
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/test-run.js';
import { Lab, LAB_PASSPHRASES } from '../../src/lab/lab.js';

describe('check-config against a running peer daemon', () => {
  let lab: Lab;
  const line = (out: string, what: string): string => out.split('\n').find((l) => l.slice(6).startsWith(`${what}:`)) ?? `(no line for ${what})`;

  /** b's config with one secret replaced, as a file of its own. */
  async function variant(from: string, to: string): Promise<string> {
    const b = lab.site('b');
    const text = await readFile(path.join(b.dir, 'config.yaml'), 'utf8');
    const file = path.join(b.dir, `variant-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, text.replace(`"${from}"`, JSON.stringify(to)), { mode: 0o600 });
    return file;
  }

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.site('a').startDaemon();
  });

  afterAll(async () => lab?.close());

  it('passes with the group\'s secrets: device backup passphrase, Operator, and the replication passphrase against peer a', async () => {
    const r = await runCli(['check-config', '--config', path.join(lab.site('b').dir, 'config.yaml')]);
    expect(line(r.out, 'device backup passphrase')).toMatch(/^ok/);
    expect(line(r.out, 'operator account operator')).toMatch(/^ok/);
    expect(line(r.out, 'peer a replication passphrase')).toBe("ok    peer a replication passphrase: replication.passphrase is the same as a's (a challenge sealed by a opens here)");
    for (const v of Object.values(LAB_PASSPHRASES)) expect(r.out + r.err).not.toContain(v);
  });

  it('fails a replication passphrase that is not the group\'s, naming the setting', async () => {
    const r = await runCli(['check-config', '--config', await variant(LAB_PASSPHRASES.replication, 'not-the-group-passphrase')]);
    expect(r.code).toBe(1);
    expect(line(r.out, 'peer a replication passphrase')).toMatch(/^FAIL {2}peer a replication passphrase: replication\.passphrase differs from a's/);
    expect(line(r.out, 'device backup passphrase')).toMatch(/^ok/);
  });

  it('fails a device backup passphrase that is not the NetHSM\'s, naming the setting', async () => {
    const r = await runCli(['check-config', '--config', await variant(LAB_PASSPHRASES.backup, 'not-the-device-backup-passphrase')]);
    expect(r.code).toBe(1);
    expect(line(r.out, 'device backup passphrase')).toMatch(/^FAIL {2}device backup passphrase: replication\.backupPassphrase does not open this NetHSM's backups/);
    expect(line(r.out, 'peer a replication passphrase')).toMatch(/^ok/);
  });
});
