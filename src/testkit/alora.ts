/**
 * Where an activated LoRA starts to apply, by PEFT and by llama-server, as plain functions over token
 * ids: what the tests hold the served adapter to (src/alora.ts says why the converter writes what it
 * writes).
 */

/**
 * Where PEFT starts applying the adapter in `input` (`calculate_alora_offsets`): the index of the
 * first token of the last whole occurrence of `invocation`; null when it does not occur (the adapter
 * is then off for the whole input).
 */
export function peftActivationStart(input: readonly number[], invocation: readonly number[]): number | null {
  if (invocation.length === 0) return null;
  for (let start = input.length - invocation.length; start >= 0; start--) {
    if (invocation.every((t, i) => input[start + i] === t)) return start;
  }
  return null;
}

/**
 * Where llama-server starts applying an adapter whose GGUF holds `written` (tools/server
 * `launch_slot_with_task`): its backward scan for the last occurrence, which does not test a token that
 * broke a partial match against the sequence's last token again, then one token before the start it
 * found (from the first token when that is 0). null when the scan finds nothing.
 */
export function serverActivationStart(input: readonly number[], written: readonly number[]): number | null {
  if (written.length === 0) return null;
  let want = written.length - 1;
  for (let i = input.length - 1; i >= 0; i--) {
    if (input[i] === written[want]) {
      if (want === 0) return Math.max(0, i - 1);
      want--;
    } else {
      want = written.length - 1;
    }
  }
  return null;
}
