import { describe, expect, it } from 'vitest';

import { f32BitsToBf16Bits, f32BitsToF16Bits } from '../../src/formats/numeric.js';
import { simdAvailable, simdF32ToBf16, simdF32ToF16 } from '../../src/formats/simd.js';
import { Rng } from '../../src/testkit/rng.js';

const hex = (n: number): string => `0x${n.toString(16)}`;

/** Every sign and exponent, with the mantissas where rounding decides (and random ones). */
function boundaryPatterns(): Uint32Array {
  const rng = new Rng(29);
  const mantissas = [
    0, 1, 2, 3, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2001, 0x3000, 0x7fff, 0x8000, 0x8001, 0xffff,
    0x10000, 0x18000, 0x3fffff, 0x400000, 0x400001, 0x7fe000, 0x7fefff, 0x7ff000, 0x7ff001, 0x7fffff,
  ];
  const out: number[] = [];
  for (let sign = 0; sign < 2; sign++) {
    for (let exp = 0; exp < 256; exp++) {
      const head = ((sign << 31) | (exp << 23)) >>> 0;
      for (const m of mantissas) out.push((head | m) >>> 0);
      for (let i = 0; i < 64; i++) out.push((head | Math.floor(rng.next() * 0x800000)) >>> 0);
    }
  }
  for (let i = 0; i < 100_000; i++) out.push(Math.floor(rng.next() * 2 ** 32));
  // a multiple of 8, so that the kernels convert every pattern
  while (out.length % 8 !== 0) out.push(0);
  return Uint32Array.from(out);
}

function expectSame(bits: Uint32Array, got: Uint16Array, scalar: (b: number) => number): void {
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i] ?? 0;
    const want = scalar(b);
    if (got[i] !== want) expect(`${hex(b)} → ${hex(got[i] ?? 0)}`).toBe(`${hex(b)} → ${hex(want)}`);
  }
}

describe('WebAssembly SIMD float conversions', () => {
  it('compile on this Node (the converter would otherwise fall back to the scalar loops)', () => {
    expect(simdAvailable()).toBe(true);
  });

  it('equal the scalar f16 and bf16 conversions on every exponent, rounding boundary and random bits', () => {
    const bits = boundaryPatterns();
    const src = new Float32Array(bits.buffer);
    const f16 = new Uint16Array(bits.length);
    const bf16 = new Uint16Array(bits.length);
    expect(simdF32ToF16(src, f16)).toBe(bits.length);
    expect(simdF32ToBf16(src, bf16)).toBe(bits.length);
    expectSame(bits, f16, f32BitsToF16Bits);
    expectSame(bits, bf16, f32BitsToBf16Bits);
  });

  it('convert whole groups of 8 across block boundaries and leave the tail to the caller', () => {
    const rng = new Rng(31);
    for (const n of [0, 1, 7, 8, 9, 15, 16, 17, 16384 - 8, 16384, 16384 + 7, 16384 * 3 + 13]) {
      const bits = Uint32Array.from({ length: n }, () => Math.floor(rng.next() * 2 ** 32));
      const out = new Uint16Array(n).fill(0xabcd);
      const done = simdF32ToF16(new Float32Array(bits.buffer), out);
      expect(done).toBe(n - (n % 8));
      expectSame(bits.subarray(0, done), out.subarray(0, done), f32BitsToF16Bits);
      expect([...out.subarray(done)].every((h) => h === 0xabcd)).toBe(true);
    }
  });

  it('work at any aligned offset, and in place over the source memory', () => {
    const rng = new Rng(37);
    const n = 40_000;
    const buffer = new ArrayBuffer(4 + n * 4);
    const bits = new Uint32Array(buffer, 4, n);
    for (let i = 0; i < n; i++) bits[i] = Math.floor(rng.next() * 2 ** 32);
    const copy = Uint32Array.from(bits);
    const apart = new Uint16Array(new ArrayBuffer(2 + n * 2), 2, n);
    expect(simdF32ToBf16(new Float32Array(buffer, 4, n), apart)).toBe(n);
    expectSame(copy, apart, f32BitsToBf16Bits);
    // the output written over the input, as a converter reusing one buffer does
    const inPlace = new Uint16Array(buffer, 4, n);
    expect(simdF32ToF16(new Float32Array(buffer, 4, n), inPlace)).toBe(n);
    expectSame(copy, inPlace, f32BitsToF16Bits);
  });

  it('refuse a destination too short for the groups, converting nothing', () => {
    const out = new Uint16Array(8).fill(7);
    expect(simdF32ToF16(new Float32Array(16), out)).toBe(0);
    expect([...out]).toEqual(Array(8).fill(7));
  });
});
