/**
 * PEFT adapters whose weights are a PyTorch `.bin`, from the same spec (and so the same tensors) as
 * writePeftAdapter's safetensors ones, laid out the ways torch.save can lay a state dict out: one
 * storage per tensor, tensors sharing a storage (views at offsets), non-contiguous tensors (a
 * transpose's strides), f32/f16/bf16, storages in torch.save's order (keys sorted as strings), and,
 * for the readers' tests, DEFLATE storages and big-endian data that torch.save itself never writes.
 * Beside them, `writeSafetensorsTwin` writes the safetensors file PEFT writes from the same state dict.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256Bytes } from '../checksum.js';
import { encodeSafetensors } from '../formats/safetensors.js';
import { safetensorsOrder } from '../formats/torch-tensor.js';
import {
  generateLoraTensors,
  peftConfigJson,
  writeMetadata,
  type AdapterSpec,
  type GeneratedTensor,
} from './peft-adapter.js';
import { PICKLE_OP, PickleBuilder, zipBytes, type TorchBinDtype, type ZipInputEntry } from './torch-bin.js';

/** How the tensors lie in their storages. */
export type BinLayout =
  /** one storage per tensor, row-major: what torch.save writes for a fresh state dict */
  | 'contiguous'
  /** each lora_A/lora_B pair in one storage, B at an offset after A: views of one buffer */
  | 'shared'
  /** every tensor the transpose of a row-major storage: strides [1, rows] */
  | 'transposed'
  /** each pair in one storage with B stored transposed: shared and non-contiguous at once */
  | 'shared-transposed';

export const BIN_LAYOUTS: readonly BinLayout[] = ['contiguous', 'shared', 'transposed', 'shared-transposed'];

export interface BinView {
  name: string;
  dtype: TorchBinDtype;
  shape: readonly number[];
  stride: readonly number[];
  storageOffset: number;
  storage: string;
}

export interface BinStorage {
  key: string;
  dtype: TorchBinDtype;
  /** little-endian elements */
  data: Uint8Array;
}

export interface BinWriteOptions {
  layout?: BinLayout;
  protocol?: 2 | 4;
  container?: 'OrderedDict' | 'dict';
  /** DEFLATE the storage entries (torch.save stores them) */
  deflate?: boolean;
  /** write the data big-endian, with a `byteorder` record saying so */
  byteorder?: 'little' | 'big';
  /** the folder inside the zip (torch.save: the file name without extension) */
  archiveName?: string;
  /** storages left out of the archive, though the pickle refers to them (a damaged file) */
  omit?: readonly string[];
}

const STORAGE_CLASS: Readonly<Record<TorchBinDtype, string>> = {
  F32: 'FloatStorage',
  F16: 'HalfStorage',
  BF16: 'BFloat16Storage',
};
const ITEM: Readonly<Record<TorchBinDtype, number>> = { F32: 4, F16: 2, BF16: 2 };

/** `data` ([rows, cols] row-major) as [cols, rows] row-major. */
function transposed(data: Uint8Array, rows: number, cols: number, item: number): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out.set(data.subarray((r * cols + c) * item, (r * cols + c + 1) * item), (c * rows + r) * item);
    }
  }
  return out;
}

/** One tensor placed at `offset` elements of a storage, row-major or transposed; its view and bytes. */
function place(
  t: GeneratedTensor,
  storage: string,
  offset: number,
  transpose: boolean,
): { view: BinView; bytes: Uint8Array } {
  const [rows = 1, cols = 1] = t.shape;
  const dtype = t.dtype;
  const view = {
    name: t.name,
    dtype,
    shape: t.shape,
    stride: transpose ? [1, rows] : [cols, 1],
    storageOffset: offset,
    storage,
  };
  return { view, bytes: transpose ? transposed(t.data, rows, cols, ITEM[dtype]) : t.data };
}

/** The views and storages of `tensors` (2-D, in state-dict order: A then B of each module) laid out as `layout` says. */
export function binLayout(
  tensors: readonly GeneratedTensor[],
  layout: BinLayout,
): { views: BinView[]; storages: BinStorage[] } {
  const views: BinView[] = [];
  const storages: BinStorage[] = [];
  const shared = layout === 'shared' || layout === 'shared-transposed';
  for (let i = 0; i < tensors.length; i += shared ? 2 : 1) {
    const group = tensors.slice(i, shared ? i + 2 : i + 1);
    const key = String(storages.length);
    const parts: Uint8Array[] = [];
    let offset = 0;
    group.forEach((t, k) => {
      const transpose = layout === 'transposed' || (layout === 'shared-transposed' && k === 1);
      const placed = place(t, key, offset, transpose);
      views.push(placed.view);
      parts.push(placed.bytes);
      offset += placed.bytes.length / ITEM[t.dtype];
    });
    storages.push({ key, dtype: group[0]?.dtype ?? 'F32', data: new Uint8Array(Buffer.concat(parts)) });
  }
  return { views, storages };
}

/** `data.pkl` of a state dict of `views`, as torch.save pickles one (`_rebuild_tensor_v2` over BINPERSID storages). */
export function viewsPickle(
  views: readonly BinView[],
  storages: readonly BinStorage[],
  options: BinWriteOptions = {},
): Uint8Array {
  const numel = new Map(storages.map((s) => [s.key, s.data.length / ITEM[s.dtype]]));
  const p = new PickleBuilder(options.protocol ?? 2).proto();
  if ((options.container ?? 'OrderedDict') === 'OrderedDict') {
    p.cachedGlobal('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE).memoize();
  } else {
    p.op(PICKLE_OP.EMPTY_DICT).memoize();
  }
  p.op(PICKLE_OP.MARK);
  for (const v of views) {
    p.cachedStr(v.name).cachedGlobal('torch._utils', '_rebuild_tensor_v2').op(PICKLE_OP.MARK);
    // the persistent id ('storage', class, key, location, numel): a new tuple at every reference
    p.op(PICKLE_OP.MARK)
      .cachedStr('storage')
      .cachedGlobal('torch', STORAGE_CLASS[v.dtype])
      .cachedStr(v.storage)
      .cachedStr('cpu')
      .int(numel.get(v.storage) ?? 0)
      .op(PICKLE_OP.TUPLE)
      .memoize()
      .op(PICKLE_OP.BINPERSID);
    p.int(v.storageOffset).intTuple(v.shape).intTuple(v.stride).op(PICKLE_OP.NEWFALSE);
    p.cachedGlobal('collections', 'OrderedDict').op(PICKLE_OP.EMPTY_TUPLE).op(PICKLE_OP.REDUCE).memoize();
    p.op(PICKLE_OP.TUPLE).memoize().op(PICKLE_OP.REDUCE).memoize();
  }
  return p.op(PICKLE_OP.SETITEMS).stop().bytes();
}

function swapped(data: Uint8Array, item: number): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let at = 0; at < data.length; at += item) {
    for (let b = 0; b < item; b++) out[at + b] = data[at + item - 1 - b] ?? 0;
  }
  return out;
}

/** A `.bin` of `views` over `storages`, laid out as torch.save lays an archive out. */
export function viewsBin(
  views: readonly BinView[],
  storages: readonly BinStorage[],
  options: BinWriteOptions = {},
): Uint8Array {
  const archive = options.archiveName ?? 'adapter_model';
  const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
  const big = options.byteorder === 'big';
  // torch.save writes the storages sorted by key, as strings: "10" before "2"
  const sorted = [...storages]
    .filter((s) => !options.omit?.includes(s.key))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const entries: ZipInputEntry[] = [
    { name: `${archive}/data.pkl`, data: viewsPickle(views, storages, options) },
    { name: `${archive}/byteorder`, data: ascii(big ? 'big' : 'little') },
    ...sorted.map((s): ZipInputEntry => ({
      name: `${archive}/data/${s.key}`,
      data: big ? swapped(s.data, ITEM[s.dtype]) : s.data,
      method: options.deflate ? 8 : 0,
    })),
    { name: `${archive}/version`, data: ascii('3\n') },
    { name: `${archive}/.data/serialization_id`, data: ascii('0000000000000000000000000000000000000000') },
  ];
  return zipBytes(entries);
}

/** The adapter's tensors as a `.bin`, laid out as `options` say. */
export function peftBinBytes(spec: AdapterSpec, options: BinWriteOptions = {}): Uint8Array {
  const { views, storages } = binLayout(generateLoraTensors(spec), options.layout ?? 'contiguous');
  return viewsBin(views, storages, options);
}

/** adapter_config.json, `weights` under `weightsName`, and metadata.json with both files' checksums. */
export async function writeAdapterWith(
  dir: string,
  spec: AdapterSpec,
  weightsName: string,
  weights: Uint8Array,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const config = `${JSON.stringify(peftConfigJson(spec), null, 2)}\n`;
  await writeFile(join(dir, 'adapter_config.json'), config);
  await writeFile(join(dir, weightsName), weights);
  if (spec.readme !== undefined) await writeFile(join(dir, 'README.md'), spec.readme);
  await writeMetadata(dir, spec, {
    'adapter_config.json': sha256Bytes(Buffer.from(config)),
    [weightsName]: sha256Bytes(weights),
  });
}

/** A PEFT adapter folder with `adapter_model.bin` weights: the tensors of `spec`, laid out as `options` say. */
export async function writePeftBinAdapter(
  dir: string,
  spec: AdapterSpec,
  options: BinWriteOptions = {},
): Promise<void> {
  await writeAdapterWith(dir, spec, 'adapter_model.bin', peftBinBytes(spec, options));
}

/**
 * The same adapter with the safetensors PEFT writes from that state dict (`save_pretrained`, through
 * the safetensors crate): tensors in the crate's order, `__metadata__` {"format": "pt"}.
 */
export async function writeSafetensorsTwin(dir: string, spec: AdapterSpec): Promise<void> {
  const tensors = safetensorsOrder(generateLoraTensors(spec));
  const bytes = encodeSafetensors(
    tensors.map(({ name, dtype, shape, data }) => ({ name, dtype, shape, data })),
    { format: 'pt' },
  );
  await writeAdapterWith(dir, spec, 'adapter_model.safetensors', bytes);
}
