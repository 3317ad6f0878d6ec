/** Tensors of a `.bin` read out of their storages: the view's span, its elements in row-major order, the writer's order. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/formats/format-error.js';
import {
  gatherView,
  isContiguous,
  safetensorsOrder,
  swapToLittleEndian,
  viewSpan,
  type TensorView,
} from '../../src/formats/torch-tensor.js';

function view(
  shape: number[],
  stride: number[],
  storageOffset = 0,
  dtype: TensorView['dtype'] = 'F32',
): TensorView {
  return { name: 't', dtype, shape, stride, storageOffset };
}

/** Element i of the storage is the int32 i: the gathered values name the elements read. */
function indexStorage(n: number): Uint8Array {
  return new Uint8Array(Int32Array.from({ length: n }, (_, i) => i).buffer);
}

/** The elements of `v`, by the definition: for every index in row-major order, offset + Σ index·stride. */
function naive(v: TensorView): number[] {
  const out: number[] = [];
  const index = v.shape.map(() => 0);
  const total = v.shape.reduce((a, b) => a * b, 1);
  for (let k = 0; k < total; k++) {
    out.push(v.storageOffset + index.reduce((sum, i, d) => sum + i * (v.stride[d] ?? 0), 0));
    for (let d = v.shape.length - 1; d >= 0; d--) {
      index[d] = (index[d] ?? 0) + 1;
      if ((index[d] ?? 0) < (v.shape[d] ?? 0)) break;
      index[d] = 0;
    }
  }
  return out;
}

function gathered(v: TensorView, storageElements: number): number[] {
  const storage = indexStorage(storageElements);
  const span = viewSpan(v, storage.length);
  const bytes = gatherView(v, span, storage.subarray(span.begin, span.end));
  return [...new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)];
}

function refusal(f: () => unknown): FormatError {
  try {
    f();
  } catch (e) {
    if (e instanceof FormatError) return e;
    throw e;
  }
  throw new Error('no refusal');
}

describe('viewSpan and gatherView', () => {
  it('a contiguous tensor at an offset is one run of its storage', () => {
    const v = view([2, 3], [3, 1], 4);
    expect(isContiguous(v)).toBe(true);
    expect(viewSpan(v, 40)).toEqual({ begin: 16, end: 40, numel: 6, itemSize: 4 });
    expect(gathered(v, 10)).toEqual([4, 5, 6, 7, 8, 9]);
  });

  it('a transposed tensor comes out row-major', () => {
    // the transpose of a [3, 2] row-major storage
    const v = view([2, 3], [1, 2]);
    expect(isContiguous(v)).toBe(false);
    expect(gathered(v, 6)).toEqual([0, 2, 4, 1, 3, 5]);
  });

  it('a column slice of a shared storage reads only its elements', () => {
    // base [4, 5]; view base[1:3, 1:4]
    const v = view([2, 3], [5, 1], 6);
    expect(viewSpan(v, 80)).toEqual({ begin: 24, end: 56, numel: 6, itemSize: 4 });
    expect(gathered(v, 20)).toEqual([6, 7, 8, 11, 12, 13]);
  });

  it('size-one dimensions may have any stride; broadcast (stride 0) repeats elements', () => {
    expect(isContiguous(view([1, 4], [999, 1]))).toBe(true);
    expect(gathered(view([1, 4], [999, 1], 2), 6)).toEqual([2, 3, 4, 5]);
    expect(gathered(view([3, 2], [0, 1]), 2)).toEqual([0, 1, 0, 1, 0, 1]);
  });

  it('a scalar and an empty tensor', () => {
    expect(gathered(view([], [], 3), 4)).toEqual([3]);
    expect(viewSpan(view([0, 5], [5, 1], 100), 0)).toEqual({ begin: 0, end: 0, numel: 0, itemSize: 4 });
    expect(gathered(view([0, 5], [5, 1]), 0)).toEqual([]);
  });

  it('equals the definition for any shape, stride and offset that fit (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ size: fc.integer({ min: 1, max: 4 }), stride: fc.integer({ min: 0, max: 7 }) }),
          {
            minLength: 0,
            maxLength: 4,
          },
        ),
        fc.integer({ min: 0, max: 5 }),
        (dims, offset) => {
          const v = view(
            dims.map((d) => d.size),
            dims.map((d) => d.stride),
            offset,
          );
          const last = naive(v).reduce((a, b) => Math.max(a, b), offset);
          expect(gathered(v, last + 1)).toEqual(naive(v));
          // one element short of the storage it needs: refused
          expect(refusal(() => viewSpan(v, last * 4)).code).toBe('BIN_STORAGE_MISMATCH');
        },
      ),
    );
  });

  it('refuses views that reach outside their storage, negative strides or offsets, and mismatched ranks', () => {
    const outside = refusal(() => viewSpan(view([2, 3], [3, 1], 1), 24));
    expect(outside.code).toBe('BIN_STORAGE_MISMATCH');
    expect(outside.message).toMatch(/reaches byte 28 of a storage of 24 bytes/u);
    expect(refusal(() => viewSpan(view([2, 3], [-3, 1], 3), 1000)).message).toMatch(/negative stride -3/u);
    expect(refusal(() => viewSpan(view([2], [1], -1), 1000)).message).toMatch(/offset -1 is negative/u);
    expect(refusal(() => viewSpan(view([2, 3], [1]), 1000)).message).toMatch(
      /2 dimensions but stride has 1/u,
    );
    // the element size is the tensor's dtype's: two F16 elements fit in 4 bytes, two F32 do not
    expect(viewSpan(view([2], [1], 0, 'F16'), 4).end).toBe(4);
    expect(refusal(() => viewSpan(view([2], [1], 0, 'F32'), 4)).code).toBe('BIN_STORAGE_MISMATCH');
    // sizes whose byte count passes 2^53 are refused, not wrapped
    expect(refusal(() => viewSpan(view([2 ** 40, 2 ** 20], [2 ** 20, 1]), 1000)).code).toBe(
      'BIN_STORAGE_MISMATCH',
    );
  });

  it('refuses span bytes shorter than the span', () => {
    const v = view([4], [1]);
    expect(refusal(() => gatherView(v, viewSpan(v, 16), new Uint8Array(8))).code).toBe(
      'BIN_STORAGE_MISMATCH',
    );
  });
});

describe('byte order and the writer order', () => {
  it('swaps big-endian elements in place', () => {
    const b = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    swapToLittleEndian(b, 2);
    expect([...b]).toEqual([2, 1, 4, 3, 6, 5, 8, 7]);
    swapToLittleEndian(b, 4);
    expect([...b]).toEqual([3, 4, 1, 2, 7, 8, 5, 6]);
  });

  it('orders as the safetensors crate: larger dtypes first, then names as UTF-8 bytes', () => {
    const order = safetensorsOrder([
      { name: 'b', dtype: 'F16' },
      { name: 'a', dtype: 'F16' },
      { name: 'z', dtype: 'F32' },
      { name: 'c', dtype: 'BF16' },
      { name: 'layers.10', dtype: 'F32' },
      { name: 'layers.2', dtype: 'F32' },
      // U+FF5E sorts before U+1F600 as UTF-8, after it as UTF-16
      { name: '\u{ff5e}', dtype: 'F32' },
      { name: '\u{1f600}', dtype: 'F32' },
    ]);
    expect(order.map((t) => t.name)).toEqual([
      'layers.10',
      'layers.2',
      'z',
      '\u{ff5e}',
      '\u{1f600}',
      'c',
      'a',
      'b',
    ]);
  });
});
