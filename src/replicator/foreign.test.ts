import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../backup/format.js';
import { silentLogger, type Logger } from '../log.js';
import { foreignAmong } from './foreign.js';

describe('foreignAmong', () => {
  let dir: string;
  let unreadable: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nhr-foreign-'));
    unreadable = path.join(dir, 'last-snapshot.nsbackup');
    await writeFile(unreadable, 'not a backup');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A logger that records what it was asked to warn about. */
  function recording(): { log: Logger; warned: string[] } {
    const warned: string[] = [];
    const log = Object.create(silentLogger, { warn: { value: (_o: unknown, msg: string) => void warned.push(msg) } }) as Logger;
    return { log, warned };
  }

  // Every removed key named by the stream: the known files (a key derivation and a whole pass each) are not read.
  it('asks the stream first and reads no known file when it knows every removed key', async () => {
    const { log, warned } = recording();
    const removed = new Set(['/key/.alpha/k1', '/key/.alpha/k2']);
    const out = await foreignAmong('alpha', removed, { files: [unreadable], open: { passphrase: 'x', scrypt: TEST_SCRYPT }, knownKey: () => true }, log);
    expect(out.paths.size).toBe(0);
    expect(warned).toEqual([]);
  });

  it('still reads the known files for what the stream does not know (users, unknown keys)', async () => {
    const { log, warned } = recording();
    const removed = new Set(['/key/.alpha/k1', '/key/.alpha/unknown', '/authentication/alpha~op']);
    const out = await foreignAmong('alpha', removed, { files: [unreadable], open: { passphrase: 'x', scrypt: TEST_SCRYPT }, knownKey: (id) => id === 'k1' }, log);
    expect(out.keyIds).toEqual(['unknown']);
    expect(out.userIds).toEqual(['op']);
    expect(warned).toHaveLength(1);
  });
});
