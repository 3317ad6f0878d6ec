/**
 * PEFT module paths → llama.cpp GGUF tensor names, from the architecture table (arch.ts): a LoRA
 * targets a module, the module is a Hugging Face tensor name without `.weight`, and the table pairs
 * each such name with llama.cpp's.
 */
import { archOf, type Arch, type ArchName, type ArchTensor } from './arch.js';

/** The base tensor a LoRA on a module adapts, and what that tensor is. */
export interface AdaptedTensor {
  /** the GGUF tensor name, e.g. `blk.3.ffn_down.weight` */
  readonly name: string;
  readonly tensor: ArchTensor;
  /** for one expert's module (`….mlp.experts.5.up_proj`), its place among the stacked tensor's */
  readonly expert: number | null;
}

interface ModuleMap {
  readonly layers: RegExp;
  /** module inside a layer → tensor (experts without their number: `mlp.experts.up_proj`) */
  readonly layer: ReadonlyMap<string, ArchTensor>;
  /** whole module name → tensor */
  readonly model: ReadonlyMap<string, ArchTensor>;
  readonly strip: (name: string) => string;
}

const WEIGHT = '.weight';
const ADAPTABLE = new Set(['linear', 'embedding', 'output']);
/** `mlp.experts.<e>.<projection>`: one expert's module */
const EXPERT = /^(.*\.experts)\.(\d+)\.([^.]+)$/u;
const maps = new Map<ArchName, ModuleMap>();

function modulesOf(tensors: readonly ArchTensor[], strip: (name: string) => string): Map<string, ArchTensor> {
  const out = new Map<string, ArchTensor>();
  for (const t of tensors) {
    if (ADAPTABLE.has(t.role) && t.hf.endsWith(WEIGHT)) out.set(strip(t.hf.slice(0, -WEIGHT.length)), t);
  }
  return out;
}

function moduleMap(archName: ArchName): ModuleMap {
  let map = maps.get(archName);
  if (map === undefined) {
    const arch: Arch = archOf(archName);
    const dropped = arch.hfStrip;
    const strip = dropped === undefined ? (n: string) => n : (n: string) => n.split(dropped).join('');
    const prefix = strip(arch.hfLayers).replace(/[.*+?^${}()|[\]\\]/gu, '\\$&');
    map = {
      layers: new RegExp(`^${prefix}\\.(\\d+)\\.(.+)$`, 'u'),
      layer: modulesOf(arch.layer, strip),
      model: modulesOf([...arch.head, ...arch.tail], strip),
      strip,
    };
    maps.set(archName, map);
  }
  return map;
}

/**
 * The GGUF weight tensor a PEFT module adapts, e.g. `model.layers.3.mlp.down_proj` →
 * `blk.3.ffn_down.weight`, or `model.layers.3.mlp.experts.5.up_proj` → expert 5 of
 * `blk.3.ffn_up_exps.weight`; null when the architecture has no such tensor.
 */
export function adaptedTensor(arch: ArchName, module: string): AdaptedTensor | null {
  const map = moduleMap(arch);
  const name = map.strip(module);
  const global = map.model.get(name);
  if (global) return { name: global.gguf, tensor: global, expert: null };
  const m = map.layers.exec(name);
  if (!m?.[1] || !m[2]) return null;
  const block = `blk.${Number(m[1])}.`;
  const expert = EXPERT.exec(m[2]);
  if (expert?.[1] && expert[2] && expert[3]) {
    const tensor = map.layer.get(`${expert[1]}.${expert[3]}`);
    return tensor?.experts ? { name: `${block}${tensor.gguf}`, tensor, expert: Number(expert[2]) } : null;
  }
  const tensor = map.layer.get(m[2]);
  return tensor && !tensor.experts ? { name: `${block}${tensor.gguf}`, tensor, expert: null } : null;
}

/**
 * Whether a module belongs to another tower of the checkpoint (gemma3's vision encoder), which the
 * GGUF text model leaves out.
 */
export function isOtherTower(arch: ArchName, module: string): boolean {
  return archOf(arch).otherTowers?.test(module) ?? false;
}

/** The PEFT module of expert `e` for an `experts` tensor's Hugging Face name (`mlp.experts.up_proj.weight`). */
export function expertModule(hf: string, e: number): string {
  return hf.replace(/\.experts\./u, `.experts.${e}.`).replace(/\.weight$/u, '');
}

/** `adaptedTensor`'s name alone. */
export function ggufTensorFor(arch: ArchName, module: string): string | null {
  return adaptedTensor(arch, module)?.name ?? null;
}

export const LORA_A_SUFFIX = '.lora_a';
export const LORA_B_SUFFIX = '.lora_b';
