import { describe, expect, it } from 'vitest';
import { PeerMessageInvalidError } from '../errors.js';
import { ndjsonLines } from './lines.js';

async function collect(chunks: (string | Buffer)[], max = 16): Promise<string[]> {
  const out: string[] = [];
  for await (const l of ndjsonLines((async function* () {
    for (const c of chunks) yield typeof c === 'string' ? Buffer.from(c) : c;
  })(), max)) out.push(l);
  return out;
}

describe('ndjsonLines', () => {
  it('splits lines across and within chunks, skipping empty ones', async () => {
    expect(await collect(['{"a"', ':1}\n{"b":2}\n\n{"c"', ':3}\n'])).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });

  it('refuses a line over the bound, even when no newline ever comes', async () => {
    await expect(collect(['x'.repeat(10), 'y'.repeat(10)])).rejects.toThrow(PeerMessageInvalidError);
    await expect(collect(['x'.repeat(17) + '\n'])).rejects.toThrow(/over 16 bytes/);
  });

  it('refuses invalid UTF-8 and a stream cut inside a line', async () => {
    await expect(collect([Buffer.from([0xff, 0xfe, 0x0a])])).rejects.toThrow(/not UTF-8/);
    await expect(collect(['{"a":1}\n{"b"'])).rejects.toThrow(/ended inside a line/);
  });
});
