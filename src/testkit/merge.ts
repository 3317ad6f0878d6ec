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
import { analyzeTensors } from '../peft-tensors.js';

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
  const byTarget = new Map(
    analysis.modules.map((m) => {
      const adapted = adaptedTensor(arch, m.module);
      return [adapted?.name ?? '', { lora: m, tensor: adapted?.tensor }] as const;
    }),
  );
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
      const target = byTarget.get(spec.name);
      if (!target?.tensor) return readTensorData(basePath, base, spec.name);
      const lora = target.lora;
      if (spec.type !== GgmlType.F32) throw new Error(`${spec.name}: merge needs an F32 base tensor`);
      const w = await readTensorF32(basePath, base, spec.name);
      const a = await f32(lora.a.name);
      const b = await f32(lora.b.name);
      const s = scaleFor(config, lora.module);
      const r = lora.rank;
      const inF = lora.inFeatures;
      const outF = lora.outFeatures;
      // delta in HF orientation: linear [out, in] = s·B·A; embedding [vocab, dim] = s·(B·A)ᵀ
      const delta = new Float32Array(inF * outF);
      for (let o = 0; o < outF; o++) {
        for (let i = 0; i < inF; i++) {
          let acc = 0;
          for (let k = 0; k < r; k++) acc += (b[o * r + k] ?? 0) * (a[k * inF + i] ?? 0);
          if (lora.kind === 'embedding') delta[i * outF + o] = s * acc;
          else delta[o * inF + i] = s * acc;
        }
      }
      // what llama.cpp's HF converter does to a merged llama q/k weight, it does to the delta
      const heads = ropePermutedHeads(model, target.tensor);
      const placed = heads === null ? delta : permuteRopeRows(delta, outF, inF, heads);
      for (let k = 0; k < w.length; k++) w[k] = (w[k] ?? 0) + (placed[k] ?? 0);
      return w;
    },
  );
}
