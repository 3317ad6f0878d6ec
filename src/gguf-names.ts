/**
 * PEFT module paths → llama.cpp GGUF tensor names, per architecture. Facts from llama.cpp's
 * tensor-name tables (gguf-py `TensorNameMap`, src/llama-arch.cpp); the layouts are our own.
 */

export const SUPPORTED_ARCHS = ['qwen2', 'llama'] as const;
export type SupportedArch = (typeof SUPPORTED_ARCHS)[number];

export function isSupportedArch(arch: string): arch is SupportedArch {
  return (SUPPORTED_ARCHS as readonly string[]).includes(arch);
}

const LAYER_MODULES: Record<string, string> = {
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
};

const GLOBAL_MODULES: Record<string, string> = {
  'model.embed_tokens': 'token_embd',
  lm_head: 'output',
};

/**
 * The GGUF weight tensor a PEFT module adapts, e.g. `model.layers.3.mlp.down_proj` →
 * `blk.3.ffn_down.weight`; null when the architecture has no such tensor.
 */
export function ggufTensorFor(_arch: SupportedArch, module: string): string | null {
  // qwen2 and llama share the HF module layout and llama.cpp's tensor names
  const global = GLOBAL_MODULES[module];
  if (global) return `${global}.weight`;
  const m = /^model\.layers\.(\d+)\.(.+)$/u.exec(module);
  if (!m?.[1] || !m[2]) return null;
  const name = LAYER_MODULES[m[2]];
  return name ? `blk.${Number(m[1])}.${name}.weight` : null;
}

export const LORA_A_SUFFIX = '.lora_a';
export const LORA_B_SUFFIX = '.lora_b';
