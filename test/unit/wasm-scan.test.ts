import { describe, expect, it } from 'vitest';

import { SCAN_WINDOW, stringSkipper } from '../../src/formats/wasm-scan.js';

/** GGUF strings (u64 length, then the bytes) laid out from offset 0; returns the end offset of each. */
function layOut(window: Uint8Array, lengths: readonly (number | bigint)[]): number[] {
  const view = new DataView(window.buffer, window.byteOffset, window.byteLength);
  const ends: number[] = [];
  let at = 0;
  for (const length of lengths) {
    view.setBigUint64(at, BigInt(length), true);
    at += 8 + (typeof length === 'bigint' ? 0 : length);
    ends.push(at);
  }
  return ends;
}

describe('the WebAssembly string skipper', () => {
  const skipper = stringSkipper();

  it('compiles here', () => {
    expect(skipper).not.toBeNull();
  });

  it('moves past the strings asked for when they lie in the window', () => {
    if (!skipper) return;
    const ends = layOut(skipper.window, [0, 1, 5, 300, 2]);
    expect(skipper.skip(0, SCAN_WINDOW, 5, 1000)).toEqual({ offset: ends[4], left: 0 });
    expect(skipper.skip(0, SCAN_WINDOW, 3, 1000)).toEqual({ offset: ends[2], left: 0 });
  });

  it('stops before a string that does not end inside the bytes it is given', () => {
    if (!skipper) return;
    const ends = layOut(skipper.window, [4, 4, 100]);
    // the third string ends at ends[2]; give one byte less
    expect(skipper.skip(0, (ends[2] ?? 0) - 1, 3, 1000)).toEqual({ offset: ends[1], left: 1 });
    // not even the next length prefix fits
    expect(skipper.skip(0, (ends[1] ?? 0) + 7, 3, 1000)).toEqual({ offset: ends[1], left: 1 });
  });

  it('stops before a length over the limit, or of 2^32 and more, for the caller to report', () => {
    if (!skipper) return;
    const ends = layOut(skipper.window, [3, 1001, 2]);
    expect(skipper.skip(0, SCAN_WINDOW, 3, 1000)).toEqual({ offset: ends[0], left: 2 });
    const huge = layOut(skipper.window, [3, 2n ** 32n + 1n]);
    expect(skipper.skip(0, SCAN_WINDOW, 2, 2 ** 30)).toEqual({ offset: huge[0], left: 1 });
  });

  it('starts where it is told to, and answers offsets in the window', () => {
    if (!skipper) return;
    const ends = layOut(skipper.window, [4, 4, 4]);
    expect(skipper.skip(ends[0] ?? 0, SCAN_WINDOW, 2, 1000)).toEqual({ offset: ends[2], left: 0 });
  });

  it('does nothing when asked for no strings', () => {
    if (!skipper) return;
    layOut(skipper.window, [3]);
    expect(skipper.skip(0, SCAN_WINDOW, 0, 1000)).toEqual({ offset: 0, left: 0 });
  });
});
