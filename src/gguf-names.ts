/**
 * PEFT module paths → llama.cpp GGUF tensor names, from the architecture table (arch.ts): a LoRA
 * targets a module, the module is a Hugging Face tensor name without `.weight`, and the table pairs
 * each such name with llama.cpp's.
 */
import { archOf, type ArchName, type ArchTensor } from './arch.js';

/** The base tensor a LoRA on a module adapts, and what that tensor is. */
export interface AdaptedTensor {
  /** the GGUF tensor name, e.g. `blk.3.ffn_down.weight` */
  readonly name: string;
  readonly tensor: ArchTensor;
}

interface ModuleMap {
  readonly layers: RegExp;
  /** module inside a layer → tensor */
  readonly layer: ReadonlyMap<string, ArchTensor>;
  /** whole module name → tensor */
  readonly model: ReadonlyMap<string, ArchTensor>;
}

const WEIGHT = '.weight';
const ADAPTABLE = new Set(['linear', 'embedding', 'output']);
const maps = new Map<ArchName, ModuleMap>();

function modulesOf(tensors: readonly ArchTensor[]): Map<string, ArchTensor> {
  const out = new Map<string, ArchTensor>();
  for (const t of tensors) {
    if (ADAPTABLE.has(t.role) && t.hf.endsWith(WEIGHT)) out.set(t.hf.slice(0, -WEIGHT.length), t);
  }
  return out;
}

function moduleMap(archName: ArchName): ModuleMap {
  let map = maps.get(archName);
  if (map === undefined) {
    const arch = archOf(archName);
    const prefix = arch.hfLayers.replace(/[.*+?^${}()|[\]\\]/gu, '\\$&');
    map = {
      layers: new RegExp(`^${prefix}\\.(\\d+)\\.(.+)$`, 'u'),
      layer: modulesOf(arch.layer),
      model: modulesOf([...arch.head, ...arch.tail]),
    };
    maps.set(archName, map);
  }
  return map;
}

/**
 * The GGUF weight tensor a PEFT module adapts, e.g. `model.layers.3.mlp.down_proj` →
 * `blk.3.ffn_down.weight`; null when the architecture has no such tensor.
 */
export function adaptedTensor(arch: ArchName, module: string): AdaptedTensor | null {
  const map = moduleMap(arch);
  const global = map.model.get(module);
  if (global) return { name: global.gguf, tensor: global };
  const m = map.layers.exec(module);
  if (!m?.[1] || !m[2]) return null;
  const tensor = map.layer.get(m[2]);
  return tensor ? { name: `blk.${Number(m[1])}.${tensor.gguf}`, tensor } : null;
}

/** `adaptedTensor`'s name alone. */
export function ggufTensorFor(arch: ArchName, module: string): string | null {
  return adaptedTensor(arch, module)?.name ?? null;
}

export const LORA_A_SUFFIX = '.lora_a';
export const LORA_B_SUFFIX = '.lora_b';
