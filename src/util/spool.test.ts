import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Spool } from './spool.js';

const write = (s: Spool, b: Buffer) => new Promise<void>((resolve, reject) => s.sink.write(b, (err) => (err ? reject(err) : resolve())));

async function readAll(it: AsyncIterable<Buffer>): Promise<{ bytes: Buffer; error?: unknown }> {
  const parts: Buffer[] = [];
  try {
    for await (const c of it) parts.push(c);
    return { bytes: Buffer.concat(parts) };
  } catch (error) {
    return { bytes: Buffer.concat(parts), error };
  }
}

describe('Spool: a file read while it is written', () => {
  let dir: string;
  beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), 'nhr-spool-'))));
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('hands a reader the bytes as they are written and ends only after done()', async () => {
    const s = await Spool.create(join(dir, 'ok'));
    expect((await stat(s.path)).mode & 0o777).toBe(0o600);
    const it = s.reader()[Symbol.asyncIterator]();
    const first = it.next();
    await write(s, Buffer.from('abc'));
    expect((await first).value?.toString()).toBe('abc');
    const second = it.next();
    await write(s, Buffer.from('def'));
    s.sink.end();
    expect((await second).value?.toString()).toBe('def');
    // The sink ended, but the producer has not said the content is complete: the reader waits.
    let ended = false;
    const third = it.next().then((r) => ((ended = true), r));
    await new Promise((r) => setTimeout(r, 20));
    expect(ended).toBe(false);
    s.done();
    expect((await third).done).toBe(true);
    // A reader started later reads it all from the start.
    expect((await readAll(s.reader())).bytes.toString()).toBe('abcdef');
    await s.close();
    expect(existsSync(s.path)).toBe(false);
  });

  it('fails every reader with the producer error, never ending cleanly, after bytes were read', async () => {
    const s = await Spool.create(join(dir, 'broken'));
    await write(s, Buffer.from('partial'));
    const r = readAll(s.reader());
    await new Promise((res) => setTimeout(res, 10));
    s.fail(new Error('the extract failed'));
    s.done();
    const got = await r;
    expect(got.bytes.toString()).toBe('partial');
    expect((got.error as Error).message).toBe('the extract failed');
    await s.close();
    expect(existsSync(s.path)).toBe(false);
  });

  it('fails a waiting reader when closed, and refuses an existing file', async () => {
    const s = await Spool.create(join(dir, 'closed'));
    const r = readAll(s.reader());
    await s.close();
    expect(((await r).error as Error).message).toMatch(/closed/);
    await Spool.create(join(dir, 'closed')).then((x) => x.close());
    const again = await Spool.create(join(dir, 'taken'));
    await expect(Spool.create(join(dir, 'taken'))).rejects.toThrow(/EEXIST/);
    await again.close();
  });
});
