/**
 * PEM as the firmware's X.509 library (ocaml-x509 `Pem`) reads and writes it, because the TLS endpoints answer with
 * its error texts and its exact output bytes (FACTS-system §2.2–2.3, §2.6):
 * - reading: lines split at `\n` or `\r\n`; empty lines and lines starting with `#` are skipped; text outside a
 *   `-----BEGIN X-----` … `-----END X-----` block is ignored; a block's data lines are joined and base64-decoded;
 * - writing: 64-column base64, `\n` line ends, a trailing `\n` after each block.
 */

export interface PemBlock {
  label: string;
  data: Buffer;
}

type Line = { kind: 'empty' } | { kind: 'begin'; label: string } | { kind: 'end'; label: string } | { kind: 'data'; text: string };

const BEGIN = '-----BEGIN ';
const END = '-----END ';
const CLOSE = '-----';

function classify(line: string): Line {
  if (line === '' || line.startsWith('#')) return { kind: 'empty' };
  if (line.startsWith(BEGIN) && line.endsWith(CLOSE) && line.length >= BEGIN.length + CLOSE.length) {
    return { kind: 'begin', label: line.slice(BEGIN.length, line.length - CLOSE.length) };
  }
  if (line.startsWith(END) && line.endsWith(CLOSE) && line.length >= END.length + CLOSE.length) {
    return { kind: 'end', label: line.slice(END.length, line.length - CLOSE.length) };
  }
  return { kind: 'data', text: line };
}

function splitLines(text: string): Line[] {
  return text.split(/\r?\n/).map(classify);
}

/** Strict base64 (padding required), with the error texts of ocaml-base64. */
function decodeBase64(text: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new Error('Malformed input');
  if (text.length % 4 !== 0) throw new Error('Wrong padding');
  return Buffer.from(text, 'base64');
}

/**
 * All blocks of a PEM text, in order. Throws Error with the library's message for the first broken block
 * ("invalid end, expected A, found B", "invalid line, expected data or end", "end of input", base64 errors).
 */
export function parsePem(text: string): PemBlock[] {
  const lines = splitLines(text);
  const blocks: PemBlock[] = [];
  let firstError: Error | undefined;
  let i = 0;
  while (i < lines.length) {
    const line = lines[i++]!;
    if (line.kind !== 'begin') continue;
    const data: string[] = [];
    let result: PemBlock | Error | undefined;
    while (result === undefined) {
      const next = lines[i++];
      if (next === undefined) result = new Error('end of input');
      else if (next.kind === 'empty') continue;
      else if (next.kind === 'data') data.push(next.text);
      else if (next.kind === 'end' && next.label === line.label) {
        try {
          result = { label: line.label, data: decodeBase64(data.join('')) };
        } catch (err) {
          result = err as Error;
        }
      } else if (next.kind === 'end') result = new Error(`invalid end, expected ${line.label}, found ${next.label}`);
      else result = new Error('invalid line, expected data or end');
    }
    if (result instanceof Error) firstError ??= result;
    else blocks.push(result);
  }
  if (firstError !== undefined) throw firstError;
  return blocks;
}

/** The DER of every `CERTIFICATE` block (other blocks are ignored). */
export function pemCertificates(text: string): Buffer[] {
  return parsePem(text)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => b.data);
}

/** One block in the library's canonical form. */
export function encodePem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  if (lines.length === 0) lines.push('');
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Certificates as `encode_pem_multiple` writes them: one canonical block each, concatenated. */
export function encodeCertificates(ders: Buffer[]): string {
  return ders.map((d) => encodePem('CERTIFICATE', d)).join('');
}
