import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { tapBytes } from './byte-tap.js';

const CHUNK = 16 * 1024;

/** A source of `n` chunks that counts how many were pulled from it, failing at chunk `failAt` when given. */
function source(n: number, failAt?: number): { stream: Readable; pulled: () => number } {
  let pulled = 0;
  async function* gen(): AsyncGenerator<Buffer> {
    for (let i = 0; i < n; i++) {
      if (i === failAt) throw new Error('the device hung up');
      pulled++;
      yield Buffer.alloc(CHUNK, i % 251);
    }
  }
  return { stream: Readable.from(gen(), { objectMode: false, highWaterMark: CHUNK }), pulled: () => pulled };
}

function sink(): { stream: Writable; bytes: () => number } {
  let bytes = 0;
  const stream = new Writable({
    highWaterMark: CHUNK,
    write(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      cb();
    },
  });
  return { stream, bytes: () => bytes };
}

async function readAll(bytes: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of bytes) parts.push(c);
  return Buffer.concat(parts);
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('tapBytes: a second reader of a stream on its way to a sink', () => {
  it('gives the reader every byte, in order, and the sink too', async () => {
    const src = source(40);
    const out = sink();
    const tap = tapBytes(readAll);
    await pipeline(src.stream, tap.stage, out.stream);
    const read = await tap.result;
    expect(read.length).toBe(40 * CHUNK);
    expect(out.bytes()).toBe(40 * CHUNK);
    expect(read[0]).toBe(0);
    expect(read[39 * CHUNK]).toBe(39);
  });

  it("holds the stream back to the reader's pace: a stalled reader stops the source after a few chunks", async () => {
    const src = source(200);
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const tap = tapBytes(async (bytes) => {
      let n = 0;
      for await (const c of bytes) {
        if (n === 0) await stalled;
        n += c.length;
      }
      return n;
    });
    const done = pipeline(src.stream, tap.stage, sink().stream);
    await turns(50);
    // Stream buffers hold a few chunks; nothing like the 200 the source has.
    expect(src.pulled()).toBeLessThan(10);
    release();
    await done;
    expect(await tap.result).toBe(200 * CHUNK);
  });

  it("fails the stream with the reader's error when the reader fails", async () => {
    const src = source(100);
    const boom = new Error('entry 3 failed authentication');
    const tap = tapBytes(async (bytes) => {
      let n = 0;
      for await (const _ of bytes) if (++n === 3) throw boom;
    });
    await expect(pipeline(src.stream, tap.stage, sink().stream)).rejects.toBe(boom);
    await expect(tap.result).rejects.toBe(boom);
    expect(src.pulled()).toBeLessThan(100);
  });

  it("fails the stream with the reader's error when the reader fails on the last chunk, before the stream's end", async () => {
    // Regression: a reader that failed after it had taken the last chunk (e.g. the trailer is wrong) left nothing for
    // the stage to reject: the stream's end went through as a success, against this module's contract.
    const src = new Readable({ read() {} });
    const boom = new Error('the trailer is wrong');
    const tap = tapBytes(async (bytes) => {
      for await (const _ of bytes) throw boom;
    });
    const piped = pipeline(src, tap.stage, sink().stream);
    src.push(Buffer.alloc(CHUNK, 1));
    await turns(5);
    await expect(tap.result).rejects.toBe(boom);
    src.push(null);
    await expect(piped).rejects.toBe(boom);
  });

  it("fails the reader's iteration when the stream fails", async () => {
    const src = source(100, 5);
    const tap = tapBytes(readAll);
    await expect(pipeline(src.stream, tap.stage, sink().stream)).rejects.toThrow('the device hung up');
    await expect(tap.result).rejects.toThrow('the device hung up');
  });

  it('fails the reader when the stream never starts (a refused request), with no error event left unheard', async () => {
    const tap = tapBytes(readAll);
    tap.fail(new Error('403'));
    await expect(tap.result).rejects.toThrow('403');
  });

  it('lets the stream go on to the sink when the reader stops early without an error', async () => {
    const src = source(60);
    const out = sink();
    const tap = tapBytes(async (bytes) => {
      for await (const _ of bytes) break;
      return 'enough';
    });
    await pipeline(src.stream, tap.stage, out.stream);
    expect(await tap.result).toBe('enough');
    expect(out.bytes()).toBe(60 * CHUNK);
  });
});
