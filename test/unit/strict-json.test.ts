import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ExitCode, fromFormatError } from '../../src/errors.js';
import {
  DEFAULT_MAX_DEPTH,
  jsonPointer,
  JsonNumber,
  JsonObject,
  parseJson,
  parseStrictJson,
  STRICT_JSON_ERROR_CODES,
  StrictJsonError,
  toPlainJson,
  type StrictJsonErrorKind,
} from '../../src/formats/strict-json.js';
import { JSON_STRUCTURE } from '../helpers/json-pieces.js';

function failure(text: string, maxDepth?: number): StrictJsonError {
  try {
    parseStrictJson(text, maxDepth === undefined ? {} : { maxDepth });
  } catch (err) {
    if (err instanceof StrictJsonError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(text)} to be refused`);
}

function expectKind(text: string, kind: StrictJsonErrorKind): StrictJsonError {
  const err = failure(text);
  expect(err.kind, `${JSON.stringify(text)}: ${err.message}`).toBe(kind);
  expect(STRICT_JSON_ERROR_CODES).toContain(err.code);
  expect(fromFormatError(err).exitCode).toBe(ExitCode.INVALID);
  return err;
}

describe('parseStrictJson: accepted documents', () => {
  it('parses every kind of value', () => {
    const value = parseStrictJson(
      ' {"a": [1, -2.5e3, true, false, null, "x\\n\\u00e9\\ud83d\\ude00"], "b": {}} \r\n\t',
    );
    expect(toPlainJson(value)).toEqual(
      Object.assign(Object.create(null) as object, {
        a: [1, -2500, true, false, null, 'x\né😀'],
        b: Object.create(null) as object,
      }),
    );
  });

  it('accepts a scalar at the top level (RFC 8259) and surrounding whitespace', () => {
    expect(parseStrictJson('"s"')).toBe('s');
    expect(parseStrictJson(' null ')).toBeNull();
    expect((parseStrictJson('\n0\n') as JsonNumber).source).toBe('0');
  });

  it('keeps members in document order, integer-like keys included', () => {
    const value = parseStrictJson('{"b":1,"10":2,"a":3,"2":4}') as JsonObject;
    expect([...value.keys()]).toEqual(['b', '10', 'a', '2']);
  });

  it('treats __proto__ and constructor as ordinary keys', () => {
    const value = parseStrictJson('{"__proto__":{"polluted":true},"constructor":1}') as JsonObject;
    expect(value).toBeInstanceOf(JsonObject);
    expect(value.get('__proto__')).toBeInstanceOf(JsonObject);
    const plain = toPlainJson(value) as Record<string, unknown>;
    expect(Object.getPrototypeOf(plain)).toBeNull();
    expect(Object.keys(plain)).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('records where keys and values start', () => {
    const text = '{ "ab" : [1] ,"c":2}';
    const value = parseStrictJson(text) as JsonObject;
    expect(value.position).toBe(0);
    expect(value.keyPosition('ab')).toBe(2);
    expect(value.valuePosition('ab')).toBe(9);
    expect(value.keyPosition('c')).toBe(14);
    const two = value.get('c') as JsonNumber;
    expect(two.position).toBe(18);
  });

  it('stops giving positions once a member is deleted, and has none for members set later', () => {
    const value = parseStrictJson('{"a":1,"b":2}') as JsonObject;
    value.set('c', null);
    expect(value.keyPosition('b')).toBe(7);
    expect(value.keyPosition('c')).toBeUndefined();
    value.delete('a');
    expect(value.keyPosition('b')).toBeUndefined();
  });

  it('allows nesting up to the depth limit', () => {
    const deep = '['.repeat(DEFAULT_MAX_DEPTH) + ']'.repeat(DEFAULT_MAX_DEPTH);
    expect(() => parseStrictJson(deep)).not.toThrow();
  });
});

describe('JsonNumber keeps integers and floats apart', () => {
  const num = (text: string): JsonNumber => parseStrictJson(text) as JsonNumber;

  it.each([
    ['0', true, 0],
    ['42', true, 42],
    ['-7', true, -7],
    ['9007199254740991', true, 9007199254740991],
    ['-9007199254740991', true, -9007199254740991],
    ['9007199254740992', true, undefined],
    ['9007199254740993', true, undefined],
    ['123456789012345678901234567890', true, undefined],
    ['1.0', false, undefined],
    ['1.5', false, undefined],
    ['1e3', false, undefined],
    ['1E+0', false, undefined],
  ])('%s: integer=%s, safe=%s', (text, isInteger, safe) => {
    const n = num(text);
    expect(n.source).toBe(text);
    expect(n.isInteger).toBe(isInteger);
    expect(n.toSafeInteger()).toBe(safe);
    expect(n.value).toBe(Number(text));
  });

  it('gives the exact value of a big integer', () => {
    expect(num('9007199254740993').toBigInt()).toBe(9007199254740993n);
    expect(num('18446744073709551615').toBigInt()).toBe(2n ** 64n - 1n);
    expect(num('1.5').toBigInt()).toBeUndefined();
  });

  it('decides safety of a huge digit string without converting it', () => {
    const digits = '9'.repeat(1_000_000);
    const started = performance.now();
    expect(num(digits).toSafeInteger()).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('parseStrictJson: refused documents', () => {
  it('refuses duplicate keys and says which key and where', () => {
    const err = expectKind('{"a":1,\n "b":2, "a":3}', 'duplicate-key');
    expect(err.code).toBe('JSON_DUPLICATE_KEY');
    expect(err.key).toBe('a');
    expect(err.position).toBe(16);
    expect(err.message).toBe('duplicate key "a" at line 2, column 9');
    expect(err.jsonPointer).toBe('/a');
    expect(err.pointer).toBe('/a');
    expect(err.details).toMatchObject({ key: 'a', position: 16, line: 2, column: 9 });
  });

  it('compares keys after unescaping', () => {
    const err = expectKind('{"a":1,"\\u0061":2}', 'duplicate-key');
    expect(err.key).toBe('a');
  });

  it('finds duplicates in nested objects and reports their path', () => {
    const err = expectKind('{"t":{"x":[{"k~/":1,"k~/":2}]}}', 'duplicate-key');
    expect(err.jsonPointer).toBe('/t/x/0/k~0~1');
    expect(err.path).toEqual(['t', 'x', 0, 'k~/']);
  });

  it('reports a syntax error, not a duplicate key, when the text is not JSON at all', () => {
    expectKind('{"\\u00e9":"a","\\u00e9"', 'syntax');
    expectKind('{"a":1,"a":2', 'syntax');
    expectKind('{"a":1,"a":2}}', 'trailing');
    const err = expectKind('{"a":{"b":1,"b":2},"a":3}', 'duplicate-key');
    expect(err.jsonPointer).toBe('/a/b');
  });

  it('refuses a duplicate __proto__ like any other key', () => {
    expectKind('{"__proto__":1,"__proto__":2}', 'duplicate-key');
  });

  it('refuses a leading byte order mark', () => {
    const err = expectKind('\ufeff{}', 'bom');
    expect(err.position).toBe(0);
  });

  it('refuses anything after the value', () => {
    expectKind('{} {}', 'trailing');
    expectKind('{}x', 'trailing');
    expectKind('{}\u0000', 'trailing');
    expectKind('1 2', 'trailing');
    // NBSP and other Unicode spaces are not JSON whitespace
    expectKind('{}\u00a0', 'trailing');
  });

  it('refuses empty input and whitespace-only input', () => {
    expectKind('', 'empty');
    expectKind('  \n', 'empty');
  });

  it.each([
    ['"\\ud800"', 'escaped lone high surrogate'],
    ['"\\udc00"', 'escaped lone low surrogate'],
    ['"\\ud800\\u0041"', 'high surrogate followed by a non-surrogate escape'],
    ['"\\ud800x"', 'high surrogate followed by a plain character'],
    ['"\ud800"', 'raw lone high surrogate'],
    ['"\udc00"', 'raw lone low surrogate'],
    ['"a\ud800"', 'raw high surrogate at the end of the string'],
  ])('refuses lone surrogates: %s (%s)', (text) => {
    expectKind(text, 'lone-surrogate');
  });

  it('refuses unescaped control characters in strings', () => {
    expectKind('"a\nb"', 'control-character');
    expectKind('"\u0000"', 'control-character');
    expectKind('"\u001f"', 'control-character');
  });

  it.each([
    '{,}',
    '{"a"}',
    '{"a":}',
    '{"a":1,}',
    '[1,]',
    '[,1]',
    '{a:1}',
    "{'a':1}",
    '[1 2]',
    '{"a":1 "b":2}',
    '01',
    '-',
    '-a',
    '1.',
    '.5',
    '+1',
    '1e',
    '1e+',
    '0x10',
    'NaN',
    'Infinity',
    '-Infinity',
    'tru',
    'nul',
    'True',
    'undefined',
    '"abc',
    '"\\x41"',
    '"\\u12"',
    '"\\u12G4"',
    '"\\',
    '/* c */ {}',
    '{} // c',
    '[',
    '{',
    '{"a":1',
  ])('refuses %j', (text) => {
    const err = failure(text);
    expect(err.code).toBe('JSON_SYNTAX');
  });

  it('bounds nesting depth, for arrays and objects', () => {
    const tooDeep = '['.repeat(DEFAULT_MAX_DEPTH + 1) + ']'.repeat(DEFAULT_MAX_DEPTH + 1);
    const err = expectKind(tooDeep, 'too-deep');
    expect(err.code).toBe('JSON_TOO_DEEP');
    expect(err.position).toBe(DEFAULT_MAX_DEPTH);
    expectKind('{"a":'.repeat(100) + '1' + '}'.repeat(100), 'too-deep');
    expect(failure('[[1]]', 1).kind).toBe('too-deep');
  });

  it('survives a million open brackets without exhausting the stack', () => {
    expectKind('['.repeat(1_000_000), 'too-deep');
  });

  it('parseJson (plain values) refuses a number no double can hold, naming the literal and where it is', () => {
    for (const [text, literal] of [
      ['{"metrics": {"a": 0.5, "b": 1e999}}', '1e999'],
      ['[-1E+400]', '-1E+400'],
      [`[${'9'.repeat(400)}]`, `${'9'.repeat(40)}…`],
    ] as const) {
      let err: unknown;
      try {
        parseJson(text);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(StrictJsonError);
      const e = err as StrictJsonError;
      expect(e.code).toBe('JSON_NUMBER_RANGE');
      expect(e.kind).toBe('number-range');
      expect(fromFormatError(e).exitCode).toBe(ExitCode.INVALID);
      expect(e.message).toContain(`the number ${literal} is too large for a double`);
      expect(e.position).toBe(text.indexOf(literal.replace('…', '')));
    }
    const e = (() => {
      try {
        parseJson('{"metrics": {"a": 0.5, "b": 1e999}}');
      } catch (x) {
        return x as StrictJsonError;
      }
      throw new Error('accepted');
    })();
    expect(e.jsonPointer).toBe('/metrics/b');
    // small, tiny and ordinary numbers are fine; without the option the lexeme is kept as written
    expect(parseJson('[1e308, 1e-999, -0, 123456789012345678901234567890]')).toEqual([
      1e308,
      0,
      -0,
      Number('123456789012345678901234567890'),
    ]);
    expect((parseStrictJson('1e999') as JsonNumber).source).toBe('1e999');
  });

  it('gives 1-based line and column of the error', () => {
    const err = failure('{\n  "a": 1,\n  "b": tru\n}');
    expect(err.details).toMatchObject({ line: 3, column: 8 });
    expect(err.message).toMatch(/at line 3, column 8$/);
  });
});

describe('parseStrictJson with a reviver', () => {
  it('sees every value once it is complete, innermost first, in document order, root last', () => {
    const seen: string[] = [];
    parseStrictJson('{"a":[1,{"b":true}],"c":"x"}', {
      reviver: (value, { path }) => {
        seen.push(`${jsonPointer(path) || '(root)'}=${JSON.stringify(toPlainJson(value))}`);
        return value;
      },
    });
    expect(seen).toEqual([
      '/a/0=1',
      '/a/1/b=true',
      '/a/1={"b":true}',
      '/a=[1,{"b":true}]',
      '/c="x"',
      '(root)={"a":[1,{"b":true}],"c":"x"}',
    ]);
  });

  it('stores what it returns in place of the value', () => {
    const value = parseStrictJson('{"keep":1,"drop":[1,2,3]}', {
      reviver: (v, { path }) => (path[0] === 'drop' && path.length === 1 ? null : v),
    });
    expect(toPlainJson(value)).toEqual(Object.assign(Object.create(null) as object, { keep: 1, drop: null }));
  });

  it('gives key and value positions', () => {
    const positions: [string, number, number][] = [];
    parseStrictJson('{ "k" : [ 7 ] }', {
      reviver: (v, { path, keyPosition, valuePosition }) => {
        positions.push([jsonPointer(path), keyPosition, valuePosition]);
        return v;
      },
    });
    expect(positions).toEqual([
      ['/k/0', 10, 10],
      ['/k', 2, 8],
      ['', 0, 0],
    ]);
  });

  it('stops the parse at the first value it throws on, before the rest is read', () => {
    let calls = 0;
    const text = `[${'1,'.repeat(1_000_000)}1]`;
    expect(() =>
      parseStrictJson(text, {
        reviver: (v) => {
          if (++calls === 3) throw new Error('enough');
          return v;
        },
      }),
    ).toThrow('enough');
    expect(calls).toBe(3);
  });

  it('sees only the values before a refusal', () => {
    let calls = 0;
    expect(() =>
      parseStrictJson('{"a":1,"a":2}', {
        reviver: (v) => {
          calls++;
          return v;
        },
      }),
    ).toThrow(StrictJsonError);
    expect(calls).toBe(1);
  });
});

describe('jsonPointer', () => {
  it('escapes ~ and / (RFC 6901)', () => {
    expect(jsonPointer([])).toBe('');
    expect(jsonPointer(['a/b', 'm~n', 0])).toBe('/a~1b/m~0n/0');
  });
});

describe('parseStrictJson agrees with JSON.parse where JSON.parse is right', () => {
  it('gives the same values for any JSON.stringify output', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), (value) => {
        const text = JSON.stringify(value);
        const ours = toPlainJson(parseStrictJson(text));
        // JSON.stringify ∘ JSON.parse normalises prototypes and -0 the same way on both sides
        expect(JSON.stringify(ours)).toBe(JSON.stringify(JSON.parse(text)));
      }),
      { numRuns: 500 },
    );
  });

  it('accepts exactly what JSON.parse accepts, except duplicates, BOM-free and surrogate rules', () => {
    const pieces = fc.constantFrom(
      ...JSON_STRUCTURE,
      '"a"',
      '"b"',
      '1',
      '-0',
      '1.5e3',
      'true',
      'null',
      ' ',
      '\n',
      '"\\u00e9"',
      '01',
      '"',
      '\\',
    );
    fc.assert(
      fc.property(fc.array(pieces, { maxLength: 12 }), (parts) => {
        const text = parts.join('');
        let native: 'ok' | 'error' = 'ok';
        try {
          JSON.parse(text);
        } catch {
          native = 'error';
        }
        let ours: 'ok' | 'error' | 'duplicate' = 'ok';
        try {
          parseStrictJson(text);
        } catch (err) {
          expect(err).toBeInstanceOf(StrictJsonError);
          ours = (err as StrictJsonError).kind === 'duplicate-key' ? 'duplicate' : 'error';
        }
        if (ours === 'duplicate') expect(native).toBe('ok');
        else expect(ours).toBe(native);
      }),
      { numRuns: 2000 },
    );
  });
});
