import { describe, expect, it } from 'vitest';

import { GgmlType } from '../../src/formats/ggml-types.js';
import {
  bf16BitsToF32,
  bf16ToF32,
  decodeToF32,
  dequantizeQ8_0,
  encodeF32,
  f16BitsToF32,
  f16BitsToF32Bits,
  f16ToF32,
  f32Bits,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32FromBits,
  f32ToBf16,
  f32ToF16,
  f32ToF16Bits,
  quantizeQ8_0,
} from '../../src/formats/numeric.js';
import { Rng } from '../../src/testkit/rng.js';

const hex = (n: number): string => `0x${n.toString(16)}`;

describe('float32 → float16', () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [65519.99609375, 0x7bff],
    [65520, 0x7c00], // the midpoint to 65536 rounds to even, i.e. Inf
    [1e10, 0x7c00],
    [-1e10, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [0, 0x0000],
    [-0, 0x8000],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 2^-24: even is 0
    [-(2 ** -25), 0x8000],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps: even is 2
    [f32FromBits(0x33000001), 0x0001], // just above the tie
    [1 + 2 ** -11, 0x3c00], // tie, even mantissa kept
    [1 + 3 * 2 ** -11, 0x3c02], // tie, rounds up to even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // above the tie
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
  ])('%s → %s', (value, bits) => {
    expect(hex(f32ToF16Bits(value))).toBe(hex(bits));
  });

  it('NaN becomes the quiet NaN 0x7e00 with its sign', () => {
    expect(hex(f32BitsToF16Bits(0x7fc00000))).toBe('0x7e00');
    expect(hex(f32BitsToF16Bits(0x7f800001))).toBe('0x7e00');
    expect(hex(f32BitsToF16Bits(0xffc12345))).toBe('0xfe00');
  });

  // Independent oracle: the nearest of the two neighbouring halves, ties to the even one.
  const positives = Float64Array.from({ length: 0x7c00 }, (_, h) => f16BitsToF32(h));
  const oracle = (bits: number): number => {
    const sign = (bits >>> 16) & 0x8000;
    const x = Math.abs(f32FromBits(bits));
    if (Number.isNaN(x)) return sign | 0x7e00;
    if (x >= 65520) return sign | 0x7c00;
    let lo = 0;
    let hi = positives.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if ((positives[mid] ?? 0) <= x) lo = mid;
      else hi = mid;
    }
    if ((positives[hi] ?? 0) <= x) lo = hi;
    if (positives[lo] === x || lo === positives.length - 1) return sign | lo;
    const below = x - (positives[lo] ?? 0);
    const above = (positives[lo + 1] ?? 0) - x;
    if (below < above) return sign | lo;
    if (above < below) return sign | (lo + 1);
    return sign | (lo % 2 === 0 ? lo : lo + 1);
  };

  it('matches round-to-nearest-even at every half, every midpoint and its neighbours', () => {
    for (let h = 0; h < 0x7c00; h++) {
      for (const sign of [0, 0x80000000]) {
        const exact = (f16BitsToF32Bits(h) | sign) >>> 0;
        const next = (f16BitsToF32Bits(h + 1) | sign) >>> 0;
        const mid = f32Bits((f32FromBits(exact) + f32FromBits(next)) / 2);
        for (const bits of [exact, mid - 1, mid, mid + 1]) {
          const got = f32BitsToF16Bits(bits);
          if (got !== oracle(bits))
            expect(`${hex(bits)} → ${hex(got)}`).toBe(`${hex(bits)} → ${hex(oracle(bits))}`);
        }
      }
    }
  });

  it('matches the oracle on a sweep of float32 bit patterns', () => {
    const rng = new Rng(7);
    for (let i = 0; i < 400_000; i++) {
      const bits = i < 65_536 ? i * 65_537 : Math.floor(rng.next() * 2 ** 32);
      const got = f32BitsToF16Bits(bits >>> 0);
      if (got !== oracle(bits >>> 0)) expect(hex(got)).toBe(hex(oracle(bits >>> 0)));
    }
  });

  it('the array conversion equals the scalar one on midpoints, overflow and random patterns', () => {
    const rng = new Rng(13);
    const bits: number[] = [];
    for (let h = 0; h < 0x7c00; h++) {
      const mid = f32Bits((f16BitsToF32(h) + f16BitsToF32(h + 1)) / 2);
      bits.push(mid - 1, mid, mid + 1, (mid | 0x80000000) >>> 0);
    }
    for (let i = 0; i < 200_000; i++) bits.push(Math.floor(rng.next() * 2 ** 32));
    const u = Uint32Array.from(bits);
    const out = f32ToF16(new Float32Array(u.buffer));
    for (let i = 0; i < u.length; i++) {
      const expected = f32BitsToF16Bits(u[i] ?? 0);
      if (out[i] !== expected)
        expect(`${hex(u[i] ?? 0)} → ${hex(out[i] ?? 0)}`).toBe(`${hex(u[i] ?? 0)} → ${hex(expected)}`);
    }
  });

  it('array conversion round-trips every half exactly', () => {
    const halves = Uint16Array.from({ length: 65536 }, (_, h) => h);
    const floats = f16ToF32(halves);
    const back = f32ToF16(floats);
    for (let h = 0; h < 65536; h++) {
      const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNaN) expect(back[h]).toBe((h & 0x8000) | 0x7e00);
      else expect(back[h]).toBe(h);
    }
  });
});

describe('float16 → float32', () => {
  it.each([
    [0x3c00, 1],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x3555, 0.333251953125],
    [0xc000, -2],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ])('%s → %s', (bits, value) => {
    expect(f16BitsToF32(bits)).toBe(value);
  });

  it('keeps the sign of zero and makes NaN quiet', () => {
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(hex(f16BitsToF32Bits(0x7e00))).toBe('0x7fc00000');
    expect(hex(f16BitsToF32Bits(0x7c01))).toBe('0x7fc02000');
    expect(hex(f16BitsToF32Bits(0xfe00))).toBe('0xffc00000');
  });
});

describe('bfloat16', () => {
  it.each([
    [0x3f800000, 0x3f80], // 1
    [0x3f808000, 0x3f80], // tie, even kept
    [0x3f818000, 0x3f82], // tie, rounds up to even
    [0x3f808001, 0x3f81], // above the tie
    [0x3f807fff, 0x3f80], // below the tie
    [0x7f7fffff, 0x7f80], // the largest float rounds to Inf
    [0x7f800000, 0x7f80], // Inf
    [0xff800000, 0xff80], // -Inf
    [0x00000001, 0x0000], // subnormals are kept, not flushed: this one rounds to 0
    [0x00018000, 0x0002], // subnormal tie to even
    [0x80000000, 0x8000],
    [0x7fc00001, 0x7fc0], // NaN keeps its top bits
    [0x7f800001, 0x7fc0], // signalling NaN becomes quiet
    [0xff800001, 0xffc0],
    [0x7f810000, 0x7fc1], // NaN payload in the top bits survives
  ])('%s → %s', (bits, expected) => {
    expect(hex(f32BitsToBf16Bits(bits))).toBe(hex(expected));
  });

  it('array conversion equals the scalar one; decode is a shift', () => {
    const rng = new Rng(11);
    const bits = Uint32Array.from({ length: 100_000 }, () => Math.floor(rng.next() * 2 ** 32));
    const floats = new Float32Array(bits.buffer);
    const out = f32ToBf16(floats);
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i] ?? 0;
      if (out[i] !== f32BitsToBf16Bits(b)) expect(hex(out[i] ?? 0)).toBe(hex(f32BitsToBf16Bits(b)));
    }
    const back = new Uint32Array(bf16ToF32(out).buffer);
    for (let i = 0; i < out.length; i++) expect(back[i]).toBe(((out[i] ?? 0) << 16) >>> 0);
    expect(bf16BitsToF32(0x3f80)).toBe(1);
  });

  it('rounds to the nearer neighbour (oracle on random finite floats)', () => {
    const rng = new Rng(3);
    for (let i = 0; i < 100_000; i++) {
      const bits = Math.floor(rng.next() * 2 ** 32) >>> 0;
      const x = f32FromBits(bits);
      if (!Number.isFinite(x)) continue;
      const got = f32BitsToBf16Bits(bits);
      const down = (bits & 0xffff0000) >>> 0;
      const a = Math.abs(x - f32FromBits(down));
      const up = (down + 0x10000) >>> 0;
      // past the largest bfloat16 the next step up is 2^128, i.e. Inf
      const upValue = (up & 0x7fffffff) === 0x7f800000 ? Math.sign(x) * 2 ** 128 : f32FromBits(up);
      const b = Math.abs(upValue - x);
      const expected = a < b ? down >>> 16 : b < a ? (down >>> 16) + 1 : (down >>> 16) + ((down >>> 16) & 1);
      if (got !== (expected & 0xffff)) expect(hex(got)).toBe(hex(expected & 0xffff));
    }
  });
});

function block(d: number, qs: readonly number[]): number[] {
  const h = f32ToF16Bits(d);
  return [h & 0xff, h >>> 8, ...qs.map((q) => q & 0xff)];
}

describe('q8_0', () => {
  it('amax 127: d = 1 and q = roundf(x), halves away from zero', () => {
    const x = new Float32Array(32);
    x.set([127, -127, 63.5, -63.5, 0.5, -0.5, 2.4999, 126.6, -0.49, 1.5]);
    const q = quantizeQ8_0(x);
    expect([...q]).toEqual(
      block(1, [127, -127, 64, -64, 1, -1, 2, 127, 0, 2, ...new Array<number>(22).fill(0)]),
    );
    expect(q[0]).toBe(0x00);
    expect(q[1]).toBe(0x3c); // f16 1.0
  });

  it('an all-zero block has d = 0 and zero quants', () => {
    expect([...quantizeQ8_0(new Float32Array(32))]).toEqual(new Array<number>(34).fill(0));
  });

  it('amax 254: d = 2, id = 0.5', () => {
    const x = new Float32Array(32);
    x.set([254, 3, -5, 1, -1, 100]);
    // 3·0.5 = 1.5 → 2, −5·0.5 = −2.5 → −3, 1·0.5 → 1, −1·0.5 → −1, 100·0.5 = 50
    expect([...quantizeQ8_0(x)]).toEqual(block(2, [127, 2, -3, 1, -1, 50, ...new Array<number>(26).fill(0)]));
  });

  it('amax 1: d = 1/127 in float32, id = 1/d in float32 (not from the f16 d)', () => {
    // fround(1/127) = 0.007874015718698502; 1/that in float32 = 127 exactly; f16(d) = 0x2008
    const x = new Float32Array(32);
    x.set([1, -1, 0.5, 0.25, 1 / 254]);
    const q = quantizeQ8_0(x);
    expect([q[0], q[1]]).toEqual([0x08, 0x20]);
    // 0.5·127 = 63.5 → 64; 0.25·127 = 31.75 → 32; fround(1/254)·127 = 0.5 exactly in float32 → 1
    expect([...new Int8Array(q.buffer, 2, 5)]).toEqual([127, -127, 64, 32, 1]);
  });

  it('two blocks, and dequantize(quantize(x)) is within d/2 of x', () => {
    const rng = new Rng(5);
    const x = rng.normals(32 * 64, 0.3);
    const q = quantizeQ8_0(x);
    expect(q.length).toBe(64 * 34);
    const y = dequantizeQ8_0(q);
    for (let b = 0; b < 64; b++) {
      const d = f16BitsToF32((q[b * 34] ?? 0) | ((q[b * 34 + 1] ?? 0) << 8));
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        expect(Math.abs((x[i] ?? 0) - (y[i] ?? 0))).toBeLessThanOrEqual(d * 0.5 + d * 2 ** -10 * 127);
      }
    }
  });

  it('refuses a length that is not whole blocks', () => {
    expect(() => quantizeQ8_0(new Float32Array(33))).toThrow(RangeError);
  });
});

describe('encodeF32 / decodeToF32', () => {
  it('round-trips each float tensor type', () => {
    const rng = new Rng(9);
    const x = rng.normals(256, 1);
    expect(decodeToF32(GgmlType.F32, encodeF32(GgmlType.F32, x))).toEqual(x);
    expect(decodeToF32(GgmlType.F16, encodeF32(GgmlType.F16, x))).toEqual(f16ToF32(f32ToF16(x)));
    expect(decodeToF32(GgmlType.BF16, encodeF32(GgmlType.BF16, x))).toEqual(bf16ToF32(f32ToBf16(x)));
    expect(decodeToF32(GgmlType.Q8_0, encodeF32(GgmlType.Q8_0, x))).toEqual(dequantizeQ8_0(quantizeQ8_0(x)));
  });

  it('decodes from an odd byte offset', () => {
    const bytes = new Uint8Array(9);
    bytes.set([0x00, 0x3c, 0x00, 0xc0], 1);
    expect([...decodeToF32(GgmlType.F16, bytes.subarray(1, 5))]).toEqual([1, -2]);
  });

  it('is fast enough for a 74 MB adapter (f16 and bf16, 18.5 M values)', () => {
    const x = new Rng(1).normals(1 << 20, 0.02);
    const out = new Uint8Array(x.length * 2);
    const start = performance.now();
    for (let i = 0; i < 18; i++) {
      encodeF32(GgmlType.F16, x, out);
      encodeF32(GgmlType.BF16, x, out);
    }
    const ms = performance.now() - start;
    expect(ms).toBeLessThan(3000);
  });
});
