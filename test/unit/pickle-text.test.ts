/**
 * The text arguments of protocol-0 opcodes against what CPython's C unpickler made of each
 * (`test/fixtures/torch/cpython-text-numbers.json`, recorded by scripts/make-torch-fixtures.py): the
 * scanner takes the same value, or refuses what CPython refuses.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  isFloat,
  readInt,
  readLong,
  readMemoIndex,
  readQuoted,
  readRawUnicode,
  type TextInt,
} from '../../src/formats/pickle-text.js';

interface Recorded {
  op: 'I' | 'L' | 'F';
  line: string;
  int?: string;
  bool?: boolean;
  float?: string;
  error?: string;
}

const recorded = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'torch', 'cpython-text-numbers.json'), 'utf8'),
) as { python: string; results: Recorded[] };

const line = (text: string): Uint8Array => new Uint8Array(Buffer.from(`${text}\n`, 'latin1'));

function asRecorded(r: TextInt | null): Omit<Recorded, 'op' | 'line'> {
  if (r === null) return { error: 'any' };
  if (r.t === 'bool') return { bool: true };
  return { int: r.v === undefined ? 'large' : r.v.toString() };
}

function expectedOf(r: Recorded): Omit<Recorded, 'op' | 'line'> {
  if (r.error !== undefined) return { error: 'any' };
  if (r.bool !== undefined) return { bool: true };
  const digits = (r.int ?? '').replace('-', '');
  return { int: digits.length > 40 || digits === 'large' ? 'large' : r.int };
}

describe('protocol-0 text arguments, as CPython reads them', () => {
  it(`agree with every result recorded from CPython ${recorded.python}`, () => {
    expect(recorded.results.length).toBeGreaterThan(200);
    for (const r of recorded.results) {
      const bytes = line(r.line);
      const shown = JSON.stringify(r.line.length > 40 ? `${r.line.slice(0, 40)}…` : r.line);
      if (r.op === 'F') {
        expect(isFloat(bytes), `FLOAT ${shown}`).toBe(r.error === undefined);
        continue;
      }
      const got = r.op === 'I' ? readInt(bytes) : readLong(bytes);
      expect(asRecorded(got), `${r.op === 'I' ? 'INT' : 'LONG'} ${shown}`).toEqual(expectedOf(r));
    }
  });

  it('reads the values that matter to a scanner the way CPython does', () => {
    // strtol's octal: the same digits a decimal reader takes for ten
    expect(readInt(line('010'))).toEqual({ t: 'int', v: 8n });
    expect(readInt(line(' 1'))).toEqual({ t: 'bool' });
    expect(readInt(line('12\0junk'))).toEqual({ t: 'int', v: 12n });
    // BigInt would have thrown a SyntaxError on these
    expect(readInt(line('0x_'))).toBeNull();
    expect(readLong(line('0b_'))).toBeNull();
  });

  it('reads memo indices in base 10', () => {
    expect(readMemoIndex(line('01'))).toBe(1n);
    expect(readMemoIndex(line(' 1_0'))).toBe(10n);
    expect(readMemoIndex(line('0x1'))).toBeNull();
    expect(readMemoIndex(line('-1'))).toBe(-1n);
  });

  it('decodes STRING escapes and UNICODE escapes, refusing what Python refuses', () => {
    expect(readQuoted(line("'a\\x41\\101\\n\\q'"))).toBe('aAA\n\\q');
    expect(readQuoted(line("'a'b'"))).toBe("a'b");
    expect(readQuoted(line("'\\x4'"))).toBeNull();
    expect(readQuoted(line("'a\\'"))).toBe(null);
    expect(readQuoted(line("'\\xff'"))).toBeNull(); // not UTF-8
    expect(readQuoted(line('"unbalanced\''))).toBeNull();
    expect(readRawUnicode(line('w\\u00e9\\U0001F600\\n'))).toBe('wé😀\\n');
    expect(readRawUnicode(line('\\u004'))).toBeNull();
    expect(readRawUnicode(line('\\U00110000'))).toBeNull();
    expect(readRawUnicode(line('\\\\u0041'))).toBe('\\\\u0041');
  });
});
