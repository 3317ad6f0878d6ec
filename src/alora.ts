/**
 * Activated LoRA (PEFT's `alora_invocation_tokens`) as llama-server applies it. PEFT finds the last
 * whole occurrence of the invocation tokens in the input and applies the adapter from its first token
 * on (positions `>= start`). llama-server (tools/server: the backward scan in `launch_slot_with_task`,
 * then the batch split at `alora_invocation_start - 1`) finds the last occurrence of the tokens written
 * in the GGUF and applies the adapter from the token *before* it. The converter therefore writes the
 * invocation without its first token: the server then finds it one token later and starts exactly
 * where PEFT does. The two differ only where the shortened sequence occurs after the last whole one
 * (or without any whole one): the server activates there, PEFT at the whole one (or not at all).
 * A one-token invocation cannot be shortened; the server starts one token early for it.
 */

/** The GGUF key llama.cpp reads them from (src/llama-adapter.cpp): an array of uint32. */
export const ALORA_INVOCATION_KEY = 'adapter.alora.invocation_tokens';

/** The tokens to write so that llama-server starts where PEFT starts (see above). */
export function servedInvocationTokens(tokens: readonly number[]): number[] {
  return tokens.length > 1 ? tokens.slice(1) : [...tokens];
}
