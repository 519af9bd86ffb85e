/**
 * Splits a byte stream into NDJSON lines with a bound on each line's size, so a peer cannot make the receiver buffer
 * without limit. Throws PeerMessageInvalidError for an oversized line or one that is not UTF-8.
 */
import { PeerMessageInvalidError } from '../errors.js';

export async function* ndjsonLines(body: AsyncIterable<Uint8Array>, maxBytes: number, site?: string): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const take = (last: Buffer): string => {
    const whole = pending.length === 0 ? last : Buffer.concat([...pending, last]);
    pending = [];
    pendingBytes = 0;
    try {
      return decoder.decode(whole);
    } catch {
      throw new PeerMessageInvalidError('stream line is not UTF-8', site !== undefined ? { site } : {});
    }
  };
  for await (const chunk of body) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (;;) {
      const nl = buf.indexOf(0x0a);
      if (nl < 0) break;
      if (pendingBytes + nl > maxBytes) throw oversized(maxBytes, site);
      const line = take(buf.subarray(0, nl));
      buf = buf.subarray(nl + 1);
      if (line !== '') yield line;
    }
    if (buf.length > 0) {
      pendingBytes += buf.length;
      if (pendingBytes > maxBytes) throw oversized(maxBytes, site);
      pending.push(Buffer.from(buf));
    }
  }
  if (pendingBytes > 0) throw new PeerMessageInvalidError('stream ended inside a line', site !== undefined ? { site } : {});
}

function oversized(maxBytes: number, site: string | undefined): PeerMessageInvalidError {
  return new PeerMessageInvalidError(`stream line is over ${maxBytes} bytes`, site !== undefined ? { site } : {});
}
