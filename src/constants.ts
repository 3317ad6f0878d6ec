/** Constants the command specs need, kept apart so the fast path can read them without loading the commands. */

/** Where the models volume is mounted in the container: `<root>/adapters/<id>` holds each adapter. */
export const DEFAULT_MODEL_ROOT = '/models';

/** The GGUF tensor types `convert` writes. */
export const OUTTYPES = ['f32', 'f16', 'bf16', 'q8_0'] as const;
export type OutType = (typeof OUTTYPES)[number];
