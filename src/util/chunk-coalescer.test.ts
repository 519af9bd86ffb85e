import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { coalesceChunks } from './chunk-coalescer.js';

/** Runs `chunks` through the coalescer; returns the chunks that came out. */
async function through(chunks: Buffer[], minBytes: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      out.push(c);
      cb();
    },
  });
  await pipeline(Readable.from(chunks, { objectMode: false }), coalesceChunks(minBytes), sink);
  return out;
}

describe('coalesceChunks', () => {
  it('passes the same bytes on in order, in chunks of at least minBytes but the last', async () => {
    // 500 TLS-record-sized chunks with a few odd sizes and an empty one among them, as a download delivers them.
    const chunks = Array.from({ length: 500 }, (_, i) => randomBytes(i % 97 === 0 ? 24 : i === 7 ? 0 : 16 * 1024));
    const out = await through(chunks, 256 * 1024);
    expect(Buffer.concat(out).equals(Buffer.concat(chunks))).toBe(true);
    for (const c of out.slice(0, -1)) expect(c.length).toBeGreaterThanOrEqual(256 * 1024);
    expect(out.at(-1)!.length).toBeGreaterThan(0);
    expect(out.length).toBeLessThanOrEqual(Math.ceil(Buffer.concat(chunks).length / (256 * 1024)));
  });

  it('lets a chunk that is already large enough through alone, and a short stream through whole at its end', async () => {
    const big = randomBytes(300_000);
    const out = await through([big, Buffer.from('tail')], 256 * 1024);
    expect(out).toHaveLength(2);
    expect(out[0]).toBe(big);
    expect(out[1]!.toString()).toBe('tail');
    const short = await through([Buffer.from('a'), Buffer.from('b')], 256 * 1024);
    expect(short.map((c) => c.toString())).toEqual(['ab']);
    expect(await through([], 16)).toEqual([]);
  });

  it('does not hold bytes for more that have not arrived: a stalled source\'s bytes go on at the end of their turn', async () => {
    const out: Buffer[] = [];
    const source = new Readable({ read() {} });
    const done = pipeline(
      source,
      coalesceChunks(1024),
      new Writable({
        write(c: Buffer, _e, cb) {
          out.push(c);
          cb();
        },
      }),
    );
    source.push(Buffer.from('abc'));
    source.push(Buffer.from('def'));
    await new Promise((r) => setTimeout(r, 20));
    expect(Buffer.concat(out).toString()).toBe('abcdef');
    expect(out).toHaveLength(1);
    source.push(null);
    await done;
  });

  it('passes on nothing it held when its source fails', async () => {
    const out: Buffer[] = [];
    const source = new Readable({ read() {} });
    const done = pipeline(
      source,
      coalesceChunks(1024),
      new Writable({
        write(c: Buffer, _e, cb) {
          out.push(c);
          cb();
        },
      }),
    );
    source.push(Buffer.alloc(100));
    source.destroy(new Error('transfer cut'));
    await expect(done).rejects.toThrow('transfer cut');
    expect(out).toEqual([]);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => coalesceChunks(0)).toThrow(RangeError);
    expect(() => coalesceChunks(1.5)).toThrow(RangeError);
  });
});
