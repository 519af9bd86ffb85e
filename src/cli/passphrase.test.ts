import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputInvalidError, PassphraseSourceError } from '../errors.js';
import { TEST_SCRYPT } from '../backup/format.js';
import { addPassphraseOptions, parseScrypt, passphraseSource, resolvePassphrase, type PassphraseSpec } from './passphrase.js';

const spec: PassphraseSpec = { flag: 'out-passphrase', what: 'the output' };
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pass-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function parse(args: string[]): Record<string, unknown> {
  const cmd = addPassphraseOptions(new Command('t').exitOverride(), spec);
  cmd.parse(args, { from: 'user' });
  return cmd.opts();
}

describe('passphrase sources', () => {
  it('reads the first line of a file, without its line ending', async () => {
    const f = join(dir, 'p');
    await writeFile(f, 'secret-one\r\nnext');
    expect(await resolvePassphrase(passphraseSource(parse(['--out-passphrase-file', f]), spec), spec)).toBe('secret-one');
  });

  it('reads an environment variable', async () => {
    process.env.NHR_PASS_TEST = 'secret-two';
    expect(await resolvePassphrase(passphraseSource(parse(['--out-passphrase-env', 'NHR_PASS_TEST']), spec), spec)).toBe('secret-two');
  });

  it('refuses a plain argument, both sources at once, empty and missing sources, without echoing values', async () => {
    const f = join(dir, 'empty');
    await writeFile(f, '\nsecond');
    const bad = [
      ['--out-passphrase', 'secret-three'],
      ['--out-passphrase-file', f],
      ['--out-passphrase-file', join(dir, 'missing')],
      ['--out-passphrase-env', 'NHR_PASS_UNSET_VAR'],
      ['--out-passphrase-file', f, '--out-passphrase-env', 'X'],
      [],
    ];
    for (const args of bad) {
      const err = await resolvePassphrase(passphraseSource(parse(args), spec), spec, false).catch((e: unknown) => e);
      expect(err, args.join(' ')).toBeInstanceOf(PassphraseSourceError);
      expect((err as Error).message).not.toContain('secret-three');
    }
  });

  it('maps --scrypt to parameters and refuses others', () => {
    expect(parseScrypt('test')).toEqual(TEST_SCRYPT);
    expect(parseScrypt(undefined).N).toBe(16384);
    expect(() => parseScrypt('fast')).toThrow(InputInvalidError);
  });
});
