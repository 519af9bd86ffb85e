import { describe, expect, it } from 'vitest';
import { KeyListFormatError, KeyListParser, MAX_ELEMENT_BYTES } from './key-list-parser.js';

function parse(text: string, chunk = text.length || 1): string[] {
  const p = new KeyListParser();
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += chunk) p.push(bytes.subarray(i, i + chunk));
  return p.end().toArray();
}

describe('KeyListParser', () => {
  it('reads the ids of a key list, however the bytes are cut', () => {
    const text = ' [ {"id":"a"},\n{ "id" : "b.c" } ,{"id":"d-1"}]\n';
    for (const chunk of [1, 2, 5, text.length]) expect(parse(text, chunk)).toEqual(['a', 'b.c', 'd-1']);
    expect(parse('[]')).toEqual([]);
  });

  it('reads the firmware form and any other JSON spelling of an element alike', () => {
    const ids = Array.from({ length: 300 }, (_, i) => `k-${i}.x_${'y'.repeat(i % 128 > 120 ? 0 : i % 128)}`).filter((id) => id.length <= 128);
    const tight = `[${ids.map((id) => `{"id":"${id}"}`).join(',')}]`;
    const escaped = (id: string): string => '{ "id":"\\u00' + id.charCodeAt(0).toString(16) + id.slice(1) + '" }';
    const loose = `[${ids.map((id, i) => (i % 2 ? `{"id":"${id}","extra":[1]}` : escaped(id))).join(',')}]`;
    for (const chunk of [1, 7, 4096]) {
      expect(parse(tight, chunk)).toEqual(ids);
      expect(parse(loose, chunk)).toEqual(ids);
    }
    const longest = 'z'.repeat(128);
    expect(parse(`[{"id":"${longest}"}]`)).toEqual([longest]);
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
    ['an id that is not a NetHSM id', '[{"id":"a"},{"id":"b c"}]', /element 1 has id "b c", which is not a NetHSM id/],
    ['an id starting with a dot', '[{"id":".a"}]', /element 0 has id ".a", which is not a NetHSM id/],
    ['an empty id', '[{"id":""}]', /element 0 has id "", which is not a NetHSM id/],
    ['an id over 128 characters', `[{"id":"${'x'.repeat(129)}"}]`, /element 0 has id "x{129}", which is not a NetHSM id/],
    ['a non-ASCII id', '[{"id":"caf\u00e9"}]', /element 0 has id "café", which is not a NetHSM id/],
  ])('refuses %s', (_what, text, message) => {
    expect(() => parse(text)).toThrow(KeyListFormatError);
    expect(() => parse(text)).toThrow(message);
  });
});
