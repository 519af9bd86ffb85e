import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from './load.js';
import { loadSecrets } from './secrets.js';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');
const examplePath = path.join(repoRoot, 'deploy', 'config.example.yaml');

const credentials = mkdtempSync(path.join(tmpdir(), 'nhr-creds-'));
afterAll(() => rmSync(credentials, { recursive: true, force: true }));

describe('deploy/config.example.yaml', () => {
  it('parses, and its secret references resolve from a credentials directory and the environment', async () => {
    const text = readFileSync(examplePath, 'utf8');
    const files = [...text.matchAll(/\$\{CREDENTIALS_DIRECTORY\}\/([\w-]+)/g)].map((m) => m[1]!);
    expect(files.length).toBeGreaterThan(5);
    for (const f of files) writeFileSync(path.join(credentials, f), `secret-of-${f}\n`);
    const env = { CREDENTIALS_DIRECTORY: credentials };

    const config = await loadConfigFile(examplePath, env);
    expect(config.site).toBe('berlin');
    expect(config.namespaces.map((n) => [n.name, n.primary])).toEqual([
      ['payments', 'berlin'],
      ['signing', 'hamburg'],
    ]);
    expect(config.tls.keyFile).toBe(path.join(credentials, 'peer-tls-key'));

    const secrets = await loadSecrets(config, env);
    expect(secrets.nethsm.admin.password).toBe('secret-of-nethsm-admin');
    expect(secrets.nethsm.metrics?.username).toBe('metrics');
    expect(secrets.nethsm.operator).toEqual({ username: 'replicator-operator', password: 'secret-of-nethsm-operator' });
    expect(secrets.namespaces.signing?.password).toBe('secret-of-signing-replicator');
    expect(secrets.replication.passphrase).toBe('secret-of-replication-passphrase');
  });

  it('takes every secret from a credential the shipped unit loads (it has no EnvironmentFile=)', () => {
    const text = readFileSync(examplePath, 'utf8');
    const unit = readFileSync(path.join(repoRoot, 'deploy', 'nethsm-replicator.service'), 'utf8');
    expect(text).not.toMatch(/^\s*[^#\n]*\{\s*env:/m);
    const loaded = new Set([...unit.matchAll(/^LoadCredential=([\w-]+):/gm)].map((m) => m[1]!));
    for (const m of text.matchAll(/\$\{CREDENTIALS_DIRECTORY\}\/([\w-]+)/g)) expect(loaded, `LoadCredential= for ${m[1]}`).toContain(m[1]);
  });

  it('fails to load with the credentials directory unset, naming the variable', async () => {
    await expect(loadConfigFile(examplePath, {})).rejects.toThrow(/refers to environment variable CREDENTIALS_DIRECTORY, which is not set/);
  });

  it('names a config file that cannot be read', async () => {
    await expect(loadConfigFile(path.join(credentials, 'nope.yaml'), {})).rejects.toThrow(/config file .*nope\.yaml cannot be read \(ENOENT\)/);
  });
});
