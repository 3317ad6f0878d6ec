/**
 * A tensor of a PyTorch `.bin` read out of its storage, never unpickled: the view torch would build
 * (shape, stride and storage offset, in elements of the tensor's dtype) is copied into the contiguous
 * row-major, little-endian layout safetensors and GGUF use. Views, non-contiguous tensors and tensors
 * sharing one storage all come out as tensors of their own.
 *
 * Also the order the safetensors writer lays tensors out in, so that a `.bin` and the safetensors file
 * PEFT would write from the same state dict give the same tensors in the same order.
 *
 * Pure: bytes in, bytes out; a view that does not fit its storage is a `FormatError`
 * (`BIN_STORAGE_MISMATCH`).
 */
import { FormatError } from './format-error.js';
import { TORCH_DTYPE_SIZES, type TorchDtype } from './pickle.js';
import { SAFETENSORS_DTYPES } from './safetensors-spec.js';
import { quoteName } from './zip.js';

/** What a tensor of a `.bin` says about where its elements lie (the scanner's `PickleTensor` is one). */
export interface TensorView {
  name: string;
  dtype: TorchDtype;
  shape: readonly number[];
  stride: readonly number[];
  /** in elements of `dtype` */
  storageOffset: number;
}

/** The bytes of its storage a view touches: `[begin, end)`, relative to the storage's first byte. */
export interface ViewSpan {
  begin: number;
  end: number;
  /** elements of the tensor: product(shape) */
  numel: number;
  itemSize: number;
}

function mismatch(view: TensorView, why: string, details: Record<string, unknown> = {}): FormatError {
  return new FormatError('BIN_STORAGE_MISMATCH', `tensor ${quoteName(view.name)}: ${why}`, {
    details: { tensor: view.name, ...details },
  });
}

/**
 * The span of its storage `view` reads, checked against the storage's `storageBytes`: every element
 * the view can address lies inside it. Strides are never negative in torch, and a dimension of size
 * one may have any stride (torch ignores it), so only dimensions of two or more elements count.
 */
export function viewSpan(view: TensorView, storageBytes: number): ViewSpan {
  const itemSize = TORCH_DTYPE_SIZES[view.dtype];
  if (view.shape.length !== view.stride.length) {
    throw mismatch(view, `shape has ${view.shape.length} dimensions but stride has ${view.stride.length}`);
  }
  if (!Number.isSafeInteger(view.storageOffset) || view.storageOffset < 0) {
    throw mismatch(view, `the storage offset ${view.storageOffset} is negative`);
  }
  let numel = 1n;
  let last = BigInt(view.storageOffset);
  for (let i = 0; i < view.shape.length; i++) {
    const size = view.shape[i] ?? 0;
    const stride = view.stride[i] ?? 0;
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(stride)) {
      throw mismatch(view, `dimension ${i} has size ${size} and stride ${stride}`);
    }
    numel *= BigInt(size);
    if (size < 2) continue;
    if (stride < 0) throw mismatch(view, `dimension ${i} has the negative stride ${stride}`);
    last += BigInt(size - 1) * BigInt(stride);
  }
  const begin = BigInt(view.storageOffset) * BigInt(itemSize);
  if (numel === 0n) return { begin: 0, end: 0, numel: 0, itemSize };
  const end = (last + 1n) * BigInt(itemSize);
  if (end > BigInt(storageBytes)) {
    throw mismatch(
      view,
      `shape [${view.shape.join(', ')}] with stride [${view.stride.join(', ')}] at offset ${view.storageOffset} reaches byte ${end} of a storage of ${storageBytes} bytes`,
      { storageBytes, reaches: Number(end) },
    );
  }
  return { begin: Number(begin), end: Number(end), numel: Number(numel), itemSize };
}

/** Whether `view` lies in its storage as a row-major array: its bytes are one run. */
export function isContiguous(view: TensorView): boolean {
  let expected = 1;
  for (let i = view.shape.length - 1; i >= 0; i--) {
    const size = view.shape[i] ?? 0;
    if (size === 0) return true;
    if (size !== 1 && view.stride[i] !== expected) return false;
    expected *= size;
  }
  return true;
}

/**
 * The tensor's elements in row-major order. `spanBytes` are the storage's bytes from `span.begin` to
 * `span.end` (viewSpan); `into`, when large enough, receives the result. A contiguous view is one
 * copy; any other walks the view's innermost rows.
 */
export function gatherView(
  view: TensorView,
  span: ViewSpan,
  spanBytes: Uint8Array,
  into?: Uint8Array,
): Uint8Array {
  const length = span.numel * span.itemSize;
  const out = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
  if (length === 0) return out;
  if (spanBytes.length < span.end - span.begin) {
    throw mismatch(view, `only ${spanBytes.length} of its ${span.end - span.begin} storage bytes were given`);
  }
  if (isContiguous(view)) {
    out.set(spanBytes.subarray(0, length));
    return out;
  }
  copyStrided(view, span.itemSize, spanBytes, out);
  return out;
}

/**
 * Walks every index of `view` but the last with an odometer (no recursion: the depth is the
 * input's), copying the innermost row at each: one run when its stride is 1, element by element
 * otherwise. Offsets are relative to the view's first element.
 */
function copyStrided(view: TensorView, itemSize: number, from: Uint8Array, out: Uint8Array): void {
  const dims = view.shape.length;
  const inner = dims === 0 ? 1 : (view.shape[dims - 1] ?? 1);
  const innerStride = dims === 0 ? 1 : (view.stride[dims - 1] ?? 1);
  const index = new Array<number>(Math.max(0, dims - 1)).fill(0);
  const rowBytes = inner * itemSize;
  let base = 0;
  for (let written = 0; written < out.length; written += rowBytes) {
    if (innerStride === 1 || inner === 1) {
      out.set(from.subarray(base * itemSize, base * itemSize + rowBytes), written);
    } else {
      for (let k = 0; k < inner; k++) {
        const at = (base + k * innerStride) * itemSize;
        for (let b = 0; b < itemSize; b++) out[written + k * itemSize + b] = from[at + b] ?? 0;
      }
    }
    // the next row: the last outer index that is not at its end moves on, the ones after it reset
    for (let d = dims - 2; d >= 0; d--) {
      const size = view.shape[d] ?? 1;
      const stride = view.stride[d] ?? 0;
      if ((index[d] ?? 0) + 1 < size) {
        index[d] = (index[d] ?? 0) + 1;
        base += stride;
        break;
      }
      base -= (size - 1) * stride;
      index[d] = 0;
    }
  }
}

/** Big-endian elements of `itemSize` bytes made little-endian, in place. */
export function swapToLittleEndian(bytes: Uint8Array, itemSize: number): void {
  if (itemSize === 1) return;
  for (let at = 0; at + itemSize <= bytes.length; at += itemSize) {
    for (let i = 0, j = itemSize - 1; i < j; i++, j--) {
      const t = bytes[at + i] ?? 0;
      bytes[at + i] = bytes[at + j] ?? 0;
      bytes[at + j] = t;
    }
  }
}

const DTYPE_RANK: ReadonlyMap<string, number> = new Map(
  Object.keys(SAFETENSORS_DTYPES).map((dtype, i) => [dtype, i]),
);
const utf8 = new TextEncoder();

/**
 * The order the safetensors writer (the reference Rust crate, which PEFT's `save_pretrained` and
 * `safetensors.torch.save_file` use) lays tensors out in: larger dtypes first (its dtype enumeration,
 * from last to first), then by name, compared as UTF-8 bytes. Returns a sorted copy.
 */
export function safetensorsOrder<T extends { name: string; dtype: string }>(tensors: readonly T[]): T[] {
  const keyed = tensors.map((t) => ({ t, rank: DTYPE_RANK.get(t.dtype) ?? -1, name: utf8.encode(t.name) }));
  keyed.sort((a, b) => b.rank - a.rank || compareBytes(a.name, b.name));
  return keyed.map((k) => k.t);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
