import { describe, expect, it } from 'vitest';
import { KeyListFormatError, KeyListParser, MAX_ELEMENT_BYTES } from './key-list-parser.js';

function parse(text: string, chunk = text.length || 1): string[] {
  const p = new KeyListParser();
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += chunk) p.push(bytes.subarray(i, i + chunk));
  return p.end();
}

describe('KeyListParser', () => {
  it('reads the ids of a key list, however the bytes are cut', () => {
    const text = ' [ {"id":"a"},\n{ "id" : "b.c" } ,{"id":"d-1"}]\n';
    for (const chunk of [1, 2, 5, text.length]) expect(parse(text, chunk)).toEqual(['a', 'b.c', 'd-1']);
    expect(parse('[]')).toEqual([]);
  });

  it.each([
    ['not a list', '{"id":"a"}', /not a JSON list/],
    ['a missing comma', '[{"id":"a"}{"id":"b"}]', /unexpected "\{" between/],
    ['a leading comma', '[,{"id":"a"}]', /unexpected ","/],
    ['an element that is not an object', '[{"id":"a"},"b"]', /unexpected "\\""/],
    ['an element without an id', '[{"name":"a"}]', /element 0 has no string id/],
    ['a number as id', '[{"id":1}]', /element 0 has no string id/],
    ['a brace inside a string', '[{"id":"a}b"}]', /element 0 is not a JSON object/],
    ['an oversized element', `[{"id":"${'x'.repeat(MAX_ELEMENT_BYTES)}"}]`, /over 4096 bytes/],
    ['bytes after the end', '[{"id":"a"}] x', /bytes after the end/],
    ['a truncated answer', '[{"id":"a"},{"id"', /ended early/],
  ])('refuses %s', (_what, text, message) => {
    expect(() => parse(text)).toThrow(KeyListFormatError);
    expect(() => parse(text)).toThrow(message);
  });
});
