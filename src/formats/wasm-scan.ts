/**
 * Walking past GGUF strings in WebAssembly: a model's vocabulary is ~300k length-prefixed strings
 * (tokens and merges) between the metadata a base-model read needs and the tensor infos after it.
 * A cold JavaScript loop over them runs interpreted until V8 has optimised it, ~15 ms of a
 * command's start-up; this loop is machine code from the first iteration.
 *
 * `skip` only ever moves over strings that lie wholly inside the bytes it is given and whose length
 * is within the limit; it stops at anything else and leaves that string to the caller's checked
 * path (gguf.ts), which reports limits and truncation with their finding codes.
 */
import {
  body,
  EXPORT,
  get,
  i32,
  instantiate,
  MAGIC,
  name,
  OP,
  section,
  set,
  tee,
  TYPE,
  uleb,
} from './wasm-kit.js';

/** bytes the window takes: one refill of the GGUF cursor */
export const SCAN_WINDOW = 256 << 10;
const PAGES = SCAN_WINDOW / 65536;

// skip(p, end, n, max) → the offset after the strings moved past; the global `left` is n minus them
const P = 0;
const END = 1;
const N = 2;
const MAX = 3;
const LOW = 4;
const Q = 5;

// prettier-ignore
const skipBody = (): number[] => body([[2, TYPE.i32]], [ // locals: LOW (the string's length), Q (the offset after it)
  OP.block, TYPE.void,
  OP.loop, TYPE.void,
  // no strings left
  ...get(N), OP.i32Eqz, OP.brIf, 1,
  // the length does not fit in the window
  ...get(P), ...i32(8), OP.i32Add, ...get(END), OP.i32GtU, OP.brIf, 1,
  // a length of 2^32 or more (its high word is not zero), or one over the limit
  ...get(P), OP.i32Load, 2, 4, OP.brIf, 1,
  ...get(P), OP.i32Load, 2, 0, ...tee(LOW), ...get(MAX), OP.i32GtU, OP.brIf, 1,
  // the string does not end inside the window
  ...get(P), ...i32(8), OP.i32Add, ...get(LOW), OP.i32Add, ...tee(Q), ...get(END), OP.i32GtU, OP.brIf, 1,
  ...get(Q), ...set(P),
  ...get(N), ...i32(1), OP.i32Sub, ...set(N),
  OP.br, 0,
  OP.end,
  OP.end,
  ...get(N), OP.globalSet, 0,
  ...get(P),
]);

// prettier-ignore
const moduleBytes = (): number[] => [
  ...MAGIC,
  ...section(1, [1, TYPE.func, 4, TYPE.i32, TYPE.i32, TYPE.i32, TYPE.i32, 1, TYPE.i32]), // (i32 ×4) → i32
  ...section(3, [1, 0]),
  ...section(5, [1, 0, ...uleb(PAGES)]),
  ...section(6, [1, TYPE.i32, 1, ...i32(0), OP.end]), // global `left`: mutable i32, 0
  ...section(7, [3, ...name('memory'), EXPORT.memory, 0, ...name('skip'), EXPORT.func, 0, ...name('left'), EXPORT.global, 0]),
  ...section(10, [1, ...skipBody()]),
];

export interface StringSkipper {
  /** the window: the bytes to walk are read or copied here */
  readonly window: Uint8Array;
  /**
   * Moves past up to `n` strings in `window[start, end)`, each at most `max` bytes long (`max` below
   * 2^30); resolves to the offset after the last one and how many of the `n` are left.
   */
  skip(start: number, end: number, n: number, max: number): { offset: number; left: number };
}

let skipper: StringSkipper | null | undefined;

/** The skipper, or null where WebAssembly is not available (the caller's own loop then runs). */
export function stringSkipper(): StringSkipper | null {
  if (skipper !== undefined) return skipper;
  const exports = instantiate(moduleBytes()) as {
    memory: { buffer: ArrayBuffer };
    skip: (p: number, end: number, n: number, max: number) => number;
    left: { value: number };
  } | null;
  skipper = exports
    ? {
        window: new Uint8Array(exports.memory.buffer, 0, SCAN_WINDOW),
        skip: (start, end, n, max) => {
          const offset = exports.skip(start, end, n, max);
          return { offset, left: exports.left.value };
        },
      }
    : null;
  return skipper;
}
