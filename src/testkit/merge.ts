/**
 * Merges a PEFT LoRA into a base GGUF the way PEFT's merge_and_unload does: W' = W + scale·B·A with
 * PEFT's own per-module scale. The reference the converter is proven against: llama-server with
 * `-m merged.gguf` must match llama-server with `-m base.gguf --lora converted.gguf`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GGML_TYPE_OF_DTYPE, GgmlType } from '../formats/ggml-types.js';
import { readGgufHeader, readTensorData, readTensorF32 } from '../files/gguf.js';
import { permuteRopeRows, readBaseModel, ropePermutedHeads } from '../base-model.js';
import { writeGguf } from '../files/gguf-writer.js';
import { decodeToF32 } from '../formats/numeric.js';
import { readSafetensorsHeader, readTensorBytes } from '../files/safetensors.js';
import { adaptedTensor } from '../gguf-names.js';
import { parseLoraConfig, scaleFor } from '../peft-config.js';
import { analyzeTensors, type LoraModule } from '../peft-tensors.js';
import type { ArchTensor } from '../arch.js';

export async function writeMergedModel(basePath: string, adapterDir: string, outPath: string): Promise<void> {
  const base = await readGgufHeader(basePath);
  const model = await readBaseModel(basePath);
  const arch = model.arch;
  const parsed = parseLoraConfig(await readFile(join(adapterDir, 'adapter_config.json'), 'utf8'));
  if (!parsed.config) throw new Error('bad adapter config');
  const config = parsed.config;
  const weights = join(adapterDir, 'adapter_model.safetensors');
  const header = await readSafetensorsHeader(weights);
  const analysis = analyzeTensors(header.tensors, config, 'adapter_model.safetensors');
  // each base tensor and the LoRAs on it: one, or one per expert of a stacked tensor
  const byTarget = new Map<string, { lora: LoraModule; tensor: ArchTensor; expert: number }[]>();
  for (const m of analysis.modules) {
    const adapted = adaptedTensor(arch, m.module);
    if (!adapted) continue;
    const list = byTarget.get(adapted.name) ?? [];
    list.push({ lora: m, tensor: adapted.tensor, expert: adapted.expert ?? 0 });
    byTarget.set(adapted.name, list);
  }
  const infos = new Map(header.tensors.map((t) => [t.name, t]));
  const f32 = async (name: string): Promise<Float32Array> => {
    const info = infos.get(name);
    if (!info) throw new Error(`missing ${name}`);
    return decodeToF32(GGML_TYPE_OF_DTYPE[info.dtype] ?? -1, await readTensorBytes(weights, header, info));
  };

  await writeGguf(
    outPath,
    {
      metadata: [...base.metadata.values()].map(
        (kv) => [kv.key, { type: kv.type, value: kv.value }] as const,
      ),
      tensors: base.tensors.map((t) => ({ name: t.name, ne: t.ne, type: t.type })),
      alignment: base.alignment,
    },
    async (spec) => {
      const targets = byTarget.get(spec.name);
      if (!targets) return readTensorData(basePath, base, spec.name);
      if (spec.type !== GgmlType.F32) throw new Error(`${spec.name}: merge needs an F32 base tensor`);
      const w = await readTensorF32(basePath, base, spec.name);
      for (const { lora, tensor, expert } of targets) {
        const delta = await deltaOf(lora, scaleFor(config, lora.module), f32);
        // what llama.cpp's HF converter does to a merged llama q/k weight, it does to the delta
        const heads = ropePermutedHeads(model, tensor);
        const placed =
          heads === null ? delta : permuteRopeRows(delta, lora.outFeatures, lora.inFeatures, heads);
        // a stacked tensor holds its experts one after another
        const at = expert * placed.length;
        for (let k = 0; k < placed.length; k++) w[at + k] = (w[at + k] ?? 0) + (placed[k] ?? 0);
      }
      return w;
    },
  );
}

/** PEFT's delta of one LoRA in HF orientation: linear [out, in] = s·B·A; embedding [vocab, dim] = s·(B·A)ᵀ. */
async function deltaOf(
  lora: LoraModule,
  s: number,
  f32: (name: string) => Promise<Float32Array>,
): Promise<Float32Array> {
  const a = await f32(lora.a.name);
  const b = await f32(lora.b.name);
  const r = lora.rank;
  const inF = lora.inFeatures;
  const outF = lora.outFeatures;
  const delta = new Float32Array(inF * outF);
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += (b[o * r + k] ?? 0) * (a[k * inF + i] ?? 0);
      if (lora.kind === 'embedding') delta[i * outF + o] = s * acc;
      else delta[o * inF + i] = s * acc;
    }
  }
  return delta;
}
