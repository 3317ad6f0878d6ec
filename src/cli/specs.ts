/**
 * Every command's arguments and flags (see spec.ts). Light on purpose: the fast path reads these
 * before it loads a command's code.
 */
import { DEFAULT_MODEL_ROOT, OUTTYPES } from '../constants.js';
import type { CommandSpec } from './spec.js';

/** `--root`, the models volume, for the commands that work on it (list, mount) */
const modelRootFlag = {
  kind: 'string',
  description: 'models volume root',
  env: 'MODEL_MOUNT_PATH',
  default: DEFAULT_MODEL_ROOT,
} as const;

export const convertSpec = {
  args: [{ name: 'dir', description: 'adapter directory', required: true }],
  flags: {
    base: { kind: 'string', description: 'base model GGUF (architecture and shapes)', required: true },
    out: { kind: 'string', description: 'output GGUF file (default: the cache next to the adapter)' },
    outtype: {
      kind: 'option',
      options: OUTTYPES,
      default: 'f32',
      description:
        'tensor type. f32 (default) reproduces PEFT: llama.cpp rounds activations to the weight type in LoRA matmuls. q8_0 falls back to f16 where a row is not a multiple of 32',
    },
    force: { kind: 'boolean', description: 'convert again even when the cache has the result' },
  },
} as const satisfies CommandSpec;

export const verifySpec = {
  args: [{ name: 'dir', description: 'adapter directory', required: true }],
  flags: {
    strict: { kind: 'boolean', description: 'treat every warning as an error' },
    base: {
      kind: 'string',
      description: 'base model GGUF: also check that llama.cpp will accept the adapter on it',
    },
  },
} as const satisfies CommandSpec;

export const listSpec = {
  args: [],
  flags: {
    root: modelRootFlag,
    verify: { kind: 'boolean', description: 'recompute every checksum (reads all the weights)' },
  },
} as const satisfies CommandSpec;

export const mountSpec = {
  args: [{ name: 'source', description: 'adapter folder', required: true }],
  flags: {
    root: modelRootFlag,
    id: { kind: 'string', description: 'install under this id (default: metadata.json id)' },
    base: {
      kind: 'string',
      description:
        'base model GGUF: check compatibility and build the llama.cpp adapter now, so run starts fast',
    },
    activate: { kind: 'boolean', description: 'point <root>/adapters/active at this adapter (atomically)' },
    force: { kind: 'boolean', description: 'replace an id that holds other contents' },
    'lock-timeout': {
      kind: 'integer',
      description: 'seconds to wait for another mount to finish',
      default: 60,
      min: 0,
    },
  },
} as const satisfies CommandSpec;

export const promoteSpec = {
  args: [{ name: 'dir', description: 'adapter directory', required: true }],
  flags: {
    rules: { kind: 'string', description: 'the rules file (patterns/rules.yml)', required: true },
    eval: {
      kind: 'string',
      description: 'evaluation (eval.json); default: the newest record in metadata.json evaluations',
    },
    'dry-run': { kind: 'boolean', description: 'print the unified diff, write nothing' },
    default: {
      kind: 'boolean',
      description: 'make it llm_assist.default_adapter (it becomes the default anyway when none is set)',
    },
    force: {
      kind: 'boolean',
      description: 'allow a version downgrade, or other weights under an already promoted version',
    },
    'lock-timeout': {
      kind: 'integer',
      description: 'seconds to wait for another promote of the same rules file',
      default: 10,
      min: 0,
    },
  },
} as const satisfies CommandSpec;
