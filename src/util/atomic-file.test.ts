import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OutputExistsError, InputInvalidError } from '../errors.js';
import { openAtomicFile, removePendingFilesSync, withAtomicFile } from './atomic-file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atomic-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('atomic output files', () => {
  it('writes the file with mode 0600 and leaves no temporary file', async () => {
    const out = join(dir, 'out.bin');
    await withAtomicFile(out, {}, async (s) => {
      s.write('hello ');
      s.end('world');
    });
    expect(await readFile(out, 'utf8')).toBe('hello world');
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['out.bin']);
  });

  it('refuses a directory as the target, with or without overwrite, before writing anything', async () => {
    const target = join(dir, 'sub');
    await mkdir(target);
    for (const overwrite of [false, true]) {
      let ran = false;
      const err = await withAtomicFile(target, { overwrite }, async () => {
        ran = true;
      }).catch((e: unknown) => e);
      expect(err, `overwrite ${overwrite}`).toBeInstanceOf(InputInvalidError);
      expect((err as InputInvalidError).message).toBe(`Output path ${target} is a directory`);
      expect(ran).toBe(false);
    }
    expect(await readdir(dir)).toEqual(['sub']);
    expect(await readdir(target)).toEqual([]);
  });

  it('shows nothing at the target until commit', async () => {
    const out = join(dir, 'out.bin');
    const f = await openAtomicFile(out);
    f.stream.write('partial');
    expect(await readdir(dir)).toEqual([f.tempPath.slice(dir.length + 1)]);
    await f.commit();
    expect(await readdir(dir)).toEqual(['out.bin']);
  });

  it('removes the partial file when the writer fails', async () => {
    const out = join(dir, 'out.bin');
    await expect(
      withAtomicFile(out, {}, async (s) => {
        s.write('x'.repeat(100000));
        throw new Error('writer broke');
      }),
    ).rejects.toThrow('writer broke');
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses to overwrite an existing file unless asked', async () => {
    const out = join(dir, 'out.bin');
    await writeFile(out, 'old');
    await expect(openAtomicFile(out)).rejects.toBeInstanceOf(OutputExistsError);
    await withAtomicFile(out, { overwrite: true }, async (s) => {
      s.end('new');
    });
    expect(await readFile(out, 'utf8')).toBe('new');
  });

  it('refuses at commit when the target appeared meanwhile, and removes its own file', async () => {
    const out = join(dir, 'out.bin');
    const f = await openAtomicFile(out);
    f.stream.end('mine');
    await writeFile(out, 'theirs');
    await expect(f.commit()).rejects.toBeInstanceOf(OutputExistsError);
    expect(await readFile(out, 'utf8')).toBe('theirs');
    expect(await readdir(dir)).toEqual(['out.bin']);
  });

  it('reports a missing directory as bad input', async () => {
    await expect(openAtomicFile(join(dir, 'nope', 'out.bin'))).rejects.toBeInstanceOf(InputInvalidError);
  });

  it('removes pending temporary files on demand (signal handlers)', async () => {
    const f = await openAtomicFile(join(dir, 'out.bin'));
    f.stream.write('partial');
    removePendingFilesSync();
    expect(await readdir(dir)).toEqual([]);
    await f.abort();
  });
});
