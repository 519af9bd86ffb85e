import { describe, expect, it } from 'vitest';
import { parseYojson, toPlain, YojsonError, type YValue } from './yojson.js';

const plain = (s: string | Buffer): unknown => toPlain(parseYojson(s));

function errorOf(s: string | Buffer): string {
  try {
    parseYojson(s);
  } catch (e) {
    if (e instanceof YojsonError) return e.message;
    throw e;
  }
  throw new Error(`parsed: ${String(s)}`);
}

describe('parseYojson accepts what the firmware accepts', () => {
  it('reads standard JSON with integers, floats, strings, lists and objects', () => {
    expect(plain('{"a":[1,-2,3.5,1e3,-0.25E-2,true,false,null,"x"]}')).toEqual({ a: [1, -2, 3.5, 1000, -0.0025, true, false, null, 'x'] });
    expect(parseYojson('42')).toEqual({ t: 'int', v: 42n });
    expect(parseYojson('2048.0')).toEqual({ t: 'float', v: 2048 });
    expect(parseYojson('[]')).toEqual({ t: 'list', v: [] });
    expect(parseYojson('{ }')).toEqual({ t: 'assoc', v: [] });
  });

  it('reads unquoted keys as the vendor scripts send them ({realName : "x"})', () => {
    expect(plain('{realName : "x", role: "Operator", _p2: 1}')).toEqual({ realName: 'x', role: 'Operator', _p2: 1 });
    expect(plain('{ type: "RSA", length: 2048 }')).toEqual({ type: 'RSA', length: 2048 });
  });

  it('skips // and /* */ comments wherever whitespace may stand', () => {
    expect(plain('// lead\n{/* a */"a" /* b */: /* c */ 1 // d\n, "b":2 /* e */} /* tail */')).toEqual({ a: 1, b: 2 });
    expect(plain('[1 /* multi\nline */, 2]')).toEqual([1, 2]);
  });

  it('reads NaN, Infinity and -Infinity as floats', () => {
    expect(parseYojson('[NaN, Infinity, -Infinity]')).toEqual({
      t: 'list',
      v: [
        { t: 'float', v: Number.NaN },
        { t: 'float', v: Number.POSITIVE_INFINITY },
        { t: 'float', v: Number.NEGATIVE_INFINITY },
      ],
    });
  });

  it('copies raw bytes inside strings (control characters, newlines, invalid UTF-8) and decodes escapes to UTF-8', () => {
    const raw = Buffer.concat([Buffer.from('"a\tb\nc'), Buffer.from([0x01, 0xff, 0xfe]), Buffer.from('"')]);
    expect(parseYojson(raw)).toEqual({ t: 'string', v: 'a\tb\nc\u0001\u00ff\u00fe' });
    expect(parseYojson('"\\u00e9\\n\\/\\\\\\"\\b\\f\\r\\t"')).toEqual({ t: 'string', v: Buffer.from('é\n/\\"\b\f\r\t', 'utf8').toString('latin1') });
    expect(toPlain(parseYojson('"\\ud83d\\ude00"'))).toBe('😀');
  });

  it('keeps duplicate keys in order (the typed decoder picks the last); toPlain keeps the last', () => {
    expect(parseYojson('{"a":1,"a":2}')).toEqual({
      t: 'assoc',
      v: [
        ['a', { t: 'int', v: 1n }],
        ['a', { t: 'int', v: 2n }],
      ],
    });
    expect(plain('{"a":1,"a":2}')).toEqual({ a: 2 });
    expect(Object.getPrototypeOf(plain('{"__proto__":{"x":1}}'))).toBe(Object.prototype);
  });

  it('turns integers beyond OCaml’s 63-bit range into Intlit', () => {
    expect(parseYojson('4611686018427387903')).toEqual({ t: 'int', v: 4611686018427387903n });
    expect(parseYojson('4611686018427387904')).toEqual({ t: 'intlit', v: '4611686018427387904' } satisfies YValue);
    expect(parseYojson('-4611686018427387905')).toEqual({ t: 'intlit', v: '-4611686018427387905' });
  });
});

describe('parseYojson refuses what the firmware refuses, with its messages', () => {
  // Expected texts are Yojson's own (its test suite's golden messages where it has them).
  it.each([
    ['hello', "Line 1, bytes 0-5:\nInvalid token 'hello'"],
    ['{\n      hello\n}', "Line 3, bytes 0-1:\nExpected ':' but found '}'"],
    ['{\n      3\n}', "Line 2, bytes 6-9:\nExpected string or identifier but found '3\n}'"],
    ['"unterminated', 'Line 1, bytes 12-13:\nUnexpected end of input'],
    ['[1,\n    "]', 'Line 2, bytes 5-6:\nUnexpected end of input'],
    ['[', 'Line 1, bytes 0-1:\nUnexpected end of input'],
    [']', "Line 1, bytes 0-1:\nInvalid token ']'"],
    ['}', "Line 1, bytes 0-1:\nInvalid token '}'"],
    ['"\\a"', "Line 1, bytes 2-4:\nInvalid escape sequence 'a\"'"],
    ['[1,2,]', "Line 1, bytes 5-6:\nInvalid token ']'"],
    ['{"a":1,}', "Line 1, bytes 7-8:\nExpected string or identifier but found '}'"],
    ['01', "Line 1, bytes 1-2:\nJunk after end of JSON value: '1'"],
    ['+1', "Line 1, bytes 0-2:\nInvalid token '+1'"],
    ["'hello'", "Line 1, bytes 0-7:\nInvalid token ''hello''"],
    ['{"a" "b"}', 'Line 1, bytes 5-9:\nExpected \':\' but found \'"b"}\''],
    ['[1 2]', "Line 1, bytes 3-5:\nExpected ',' or ']' but found '2]'"],
    ['{"a":1 "b":2}', 'Line 1, bytes 7-13:\nExpected \',\' or \'}\' but found \'"b":2}\''],
  ])('%j', (input, message) => {
    expect(errorOf(input)).toBe(message);
  });

  it('refuses single-quoted keys, .5, 1., leading junk and non-JSON whitespace', () => {
    expect(errorOf("{'a':1}")).toBe("Line 1, bytes 1-7:\nExpected string or identifier but found ''a':1}'");
    expect(errorOf('.5')).toBe("Line 1, bytes 0-2:\nInvalid token '.5'");
    expect(errorOf('1.')).toBe("Line 1, bytes 1-2:\nJunk after end of JSON value: '.'");
    expect(errorOf('\u000b1')).toBe("Line 1, bytes 0-2:\nInvalid token '\u000b1'");
    expect(errorOf('{"a":1} x')).toBe("Line 1, bytes 8-9:\nJunk after end of JSON value: 'x'");
    expect(errorOf('(1, 2)')).toBe("Line 1, bytes 0-6:\nInvalid token '(1, 2)'");
  });

  it('answers "Blank input data" for an empty or blank body and cuts the context at 32 bytes', () => {
    expect(errorOf('')).toBe('Blank input data');
    expect(errorOf('  \n // only a comment')).toBe('Blank input data');
    expect(errorOf(`?${'x'.repeat(40)}`)).toBe(`Line 1, bytes 0-33:\nInvalid token '?${'x'.repeat(32)}'`);
  });

  it('refuses an unterminated comment and a bad surrogate pair', () => {
    expect(errorOf('[1 /* never closed')).toMatch(/^Line 1, bytes \d+-\d+:\nUnterminated comment ''$/);
    expect(errorOf('"\\ud83d\\u0041"')).toBe("Line 1, bytes 7-14:\nInvalid low surrogate for code point beyond U+FFFF '\\u0041\"'");
  });
});
