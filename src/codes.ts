/**
 * Every finding and error code, once: the level a finding of it has, the exit status it ends a command
 * with, the `verify` checklist line it belongs to, a one-line summary and its hint (the resolution
 * printed with it; a raise may give a more specific one, e.g. naming a path). Codes are stable:
 * release scripts match on them. `Code` is the type of every code parameter (CodiError, findings,
 * format errors), so a code that is not a row here does not compile; README's table of codes is
 * rendered from the rows (`npm run docs`).
 *
 * Exit statuses: a row's `exit`, or one of the `overrides` it declares with the situation that takes
 * it. One rule holds for every finding code: a verification that fails as one error (convert, mount,
 * run) carries its first error's code and the report's status, 3 when some file could not be read.
 */
import { SAFETENSORS_DTYPES } from './formats/safetensors-spec.js';

/**
 * Exit codes shared by every command. A process ended by a signal exits as a shell reports it,
 * 128 + the signal's number; the interrupts a command handles itself are named here.
 */
export const ExitCode = {
  OK: 0,
  /** the checked thing is invalid, or a gate failed */
  INVALID: 1,
  /** the command line is wrong */
  USAGE: 2,
  /** the environment is wrong: path missing or unreadable, lock held, tool missing */
  ENVIRONMENT: 3,
  /** the LLM failed to start or became unhealthy (`run`) */
  LLM_FAILED: 4,
  /** a supervised child died (`run`) */
  CHILD_DIED: 5,
  /** stopped by SIGHUP (128 + 1) */
  INTERRUPTED_SIGHUP: 129,
  /** stopped by SIGINT (128 + 2), e.g. Ctrl-C */
  INTERRUPTED_SIGINT: 130,
  /** stopped by SIGTERM (128 + 15) */
  INTERRUPTED_SIGTERM: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The lines of verify's checklist, in their order. */
export const CHECK_NAMES = [
  'layout',
  'config',
  'weights',
  'tensors',
  'metadata',
  'checksums',
  'base',
] as const;
export type CheckName = (typeof CHECK_NAMES)[number];

export type CodeLevel = 'error' | 'warning';

export interface CodeRow {
  /** a finding's level when it is raised (`verify --strict` makes every warning an error) */
  readonly level: CodeLevel;
  /**
   * The status it ends a command with: as an error, or as a finding at level error. A warning that
   * only `--strict` turns into an error has the status it would then give; 0 is a warning no command
   * fails on.
   */
  readonly exit: ExitCode;
  /** other statuses it ends with, and when */
  readonly overrides?: readonly { readonly exit: ExitCode; readonly when: string }[];
  /**
   * The checklist line a finding of it fails (or warns): a line, `reader` for the line of the check
   * that reads the file it is about, or null for a code verify never reports.
   */
  readonly check: CheckName | 'reader' | null;
  readonly summary: string;
  /** the resolution printed with it, where there is one to give */
  readonly hint?: string;
}

const error = 'error';
const warning = 'warning';
const { OK, INVALID, USAGE, ENVIRONMENT, LLM_FAILED, CHILD_DIED } = ExitCode;

const CHECKSUM_HINT =
  're-copy the adapter files, or regenerate metadata.json checksums if the change is intended';
const REPICKLE_HINT =
  're-save the adapter with torch.save or PEFT save_pretrained, preferably as safetensors';
const BIN_TO_SAFETENSORS_HINT =
  'convert it to adapter_model.safetensors in a trusted environment, e.g. safetensors.torch.save_file(torch.load(path, weights_only=True), "adapter_model.safetensors")';
const NOT_TORCH_ZIP_HINT =
  'the file is not a PyTorch archive as torch.save writes it; re-save it, or convert it to safetensors';
export const CODES = {
  // ----- every command
  INTERNAL: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'an unexpected internal error: a bug in codi-adapter',
    hint: 'this is a bug in codi-adapter; run with CODI_DEBUG=1 for the stack trace and report it',
  },
  USAGE: {
    level: error,
    exit: USAGE,
    check: null,
    summary:
      'the command line is wrong: an unknown flag or command, a missing argument, a value of the wrong kind',
    hint: 'see --help for the flags and arguments',
  },
  PATH_MISSING: {
    level: error,
    exit: ENVIRONMENT,
    check: 'reader',
    summary: 'a path does not exist',
  },
  PATH_INACCESSIBLE: {
    level: error,
    exit: ENVIRONMENT,
    check: 'reader',
    summary: 'a path cannot be read: permission denied, not a regular file, or an I/O error',
  },
  PATH_NOT_DIRECTORY: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'the adapter folder given is a file',
  },
  PATH_NOT_FILE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'the base model given is not a file',
  },
  LOCK_HELD: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'another codi-adapter holds the lock (mount, promote) and did not let go in time',
  },

  // ----- the adapter folder
  LAYOUT_MISSING: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary: 'adapter_config.json, metadata.json or a weights file (safetensors or .bin) is missing',
  },
  LAYOUT_NOT_FILE: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary: 'a folder has the name of one of the adapter files',
  },
  LAYOUT_SPECIAL_FILE: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary: 'a named pipe, socket or device in the adapter folder',
  },
  LAYOUT_SYMLINK: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary:
      'a symbolic link in the adapter folder, or in the catalog other than `active`: it could point anywhere',
    hint: 'replace the link with a copy of the file',
  },
  LAYOUT_SUBDIRECTORY: {
    level: warning,
    exit: INVALID,
    check: 'layout',
    summary:
      'a folder in the adapter folder: nothing in it can be covered by the checksums, and mount leaves it behind',
  },
  LAYOUT_TOO_DEEP: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary: 'folders nested more than 8 levels deep',
  },
  LAYOUT_TOO_MANY_FILES: {
    level: error,
    exit: INVALID,
    check: 'layout',
    summary: 'more than 10,000 entries: not an adapter folder',
  },
  FILE_UNCOVERED: {
    level: warning,
    exit: INVALID,
    check: 'layout',
    summary: 'a file the checksums in metadata.json do not cover',
    hint: 'remove it, or add its sha256 to checksum.files',
  },
  PROMOTE_LEFTOVER: {
    level: warning,
    exit: INVALID,
    check: 'layout',
    summary: 'a lock or temp file left in the adapter folder by a promote that was killed',
    hint: 'the next promote of this adapter removes it; or delete it',
  },

  // ----- adapter_config.json
  CONFIG_JSON: {
    level: error,
    exit: INVALID,
    check: 'config',
    summary: 'adapter_config.json is not strict JSON, or not UTF-8',
  },
  CONFIG_INVALID: {
    level: error,
    exit: INVALID,
    overrides: [{ exit: USAGE, when: 'a setting of run (its environment variable or flag) is invalid' }],
    check: 'config',
    summary:
      'adapter_config.json breaks its schema, or a regular expression in it does not compile; for run, a setting is invalid',
  },
  CONFIG_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'config',
    summary:
      'a feature a llama.cpp LoRA cannot express: not LoRA, DoRA, modules_to_save, bias, fan_in_fan_out, lora_bias, layer_replication, target_parameters',
  },
  CONFIG_PATTERN_UNUSED: {
    level: warning,
    exit: INVALID,
    check: 'config',
    summary: 'a rank_pattern or alpha_pattern key matches no module',
  },
  CONFIG_PATTERN_AMBIGUOUS: {
    level: warning,
    exit: INVALID,
    check: 'config',
    summary:
      'PEFT releases scale a module differently under rank_pattern/alpha_pattern, and no peft_version says which one trained it',
    hint: 'if the adapter was trained with an older PEFT, record it in adapter_config.json (e.g. "peft_version": "0.13.2") and regenerate the metadata.json checksums',
  },

  // ----- strict JSON, under the files that are JSON
  JSON_SYNTAX: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'not JSON: a syntax error, a leading byte order mark, a lone surrogate, text after the value',
  },
  JSON_DUPLICATE_KEY: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a key appears twice in one object',
  },
  JSON_TOO_DEEP: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'arrays and objects nested more than 64 levels deep',
  },
  JSON_NUMBER_RANGE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a number too large for a double (it would read as Infinity)',
  },

  // ----- safetensors weights
  SAFETENSORS_TRUNCATED: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the file ends before the 8-byte header length, or bytes it promised could not be read',
  },
  SAFETENSORS_HEADER_LENGTH: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the header length N is 0, above 100,000,000, or runs past the end of the file',
    hint: 'the file may be truncated, or it is not a safetensors file',
  },
  SAFETENSORS_HEADER_UTF8: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the header is not valid UTF-8',
  },
  SAFETENSORS_HEADER_JSON: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the header is not one JSON value (syntax error, leading BOM, text after it, too deeply nested)',
  },
  SAFETENSORS_HEADER_NOT_OBJECT: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the header is JSON but not an object',
  },
  SAFETENSORS_DUPLICATE_KEY: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a key appears twice (a tensor name, `__metadata__`, or a key inside one)',
  },
  SAFETENSORS_METADATA: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: '`__metadata__` is not an object whose values are all strings, or has more than 10,000 entries',
  },
  SAFETENSORS_TOO_MANY_TENSORS: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the header describes more than 300,000 tensors, or shapes of more than 1,200,000 dimensions in all',
  },
  SAFETENSORS_ENTRY: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a tensor entry is not an object, or has a key other than dtype, shape, data_offsets',
  },
  SAFETENSORS_DTYPE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a tensor dtype is missing, not a string, or unknown (names are case-sensitive)',
    hint: `dtype names are case-sensitive; the known ones: ${Object.keys(SAFETENSORS_DTYPES)
      .map((n) => `"${n}"`)
      .join(', ')}`,
  },
  SAFETENSORS_SHAPE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a tensor shape is missing or not an array of at most 64 non-negative integers up to 2^53−1',
  },
  SAFETENSORS_OFFSETS: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'data_offsets are not two non-negative integers with begin ≤ end, or the tensors do not tile the data section from 0 without gap or overlap, or run past the end of the file',
  },
  SAFETENSORS_SIZE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'a tensor byte length differs from product(shape)·bits/8, is not whole bytes, or overflows 64 bits',
  },
  SAFETENSORS_TRAILING: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'bytes follow the last tensor (a file must end where its last tensor ends)',
    hint: 'a safetensors file must end where its last tensor ends; extra bytes can hide another file format',
  },

  // ----- .bin weights (a torch.save zip archive and its pickle)
  BIN_PREFER_SAFETENSORS: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary:
      'the weights are a pickle (scanned, not loaded); safetensors is preferred: no code can hide in it',
    hint: 'convert it: load with torch.load(weights_only=True) and save with safetensors.torch.save_file',
  },
  BIN_LEGACY_FORMAT: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a pre-1.6 (non-zip) torch.save file or a bare pickle: unsupported',
    hint: BIN_TO_SAFETENSORS_HINT,
  },
  BIN_NOT_TORCH_ZIP: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a zip archive, but not laid out as torch.save writes it (one folder holding data.pkl)',
    hint: BIN_TO_SAFETENSORS_HINT,
  },
  BIN_STORAGE_MISSING: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a tensor storage the pickle refers to has no data/<key> entry in the archive',
    hint: 'the file is incomplete or was not written by torch.save; re-save it',
  },
  BIN_STORAGE_MISMATCH: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'a storage entry is smaller than its declared size, a tensor view reaches past its storage, or a storage is declared twice differently',
    hint: 'the file is damaged or was edited; re-save it',
  },
  BIN_STORAGE_OVERSIZED: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary: 'a storage entry is larger than its declared size',
  },
  BIN_UNREFERENCED_STORAGE: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary: 'a data/<key> entry no tensor refers to',
  },
  BIN_UNEXPECTED_ENTRY: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary: 'an entry torch.save does not write',
  },
  BIN_BIG_ENDIAN: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary: 'tensor data is big-endian (byteorder entry)',
  },
  BIN_ZIP_TRUNCATED: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the archive ends early: no end-of-central-directory record, or a record points past the end of the file',
    hint: 're-copy the file: it looks cut short',
  },
  BIN_ZIP_INVALID: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the archive structure is inconsistent: bad signature, offsets or sizes out of range, overlapping or duplicate entries, local header disagreeing with the central directory, CRC-32 mismatch',
    hint: NOT_TORCH_ZIP_HINT,
  },
  BIN_ZIP_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the archive uses a feature PyTorch archives never use: encryption, several disks, a compression method other than STORED or DEFLATE',
    hint: NOT_TORCH_ZIP_HINT,
  },
  BIN_ZIP_ENTRY_TOO_LARGE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'an entry that has to be read whole is larger than the allowed cap',
    hint: NOT_TORCH_ZIP_HINT,
  },
  PICKLE_UNSAFE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the pickle names a global off the allow-list (os.system, builtins.eval, …), builds a global from computed strings, calls or mutates something only code could, or uses an opcode outside the allow-list',
    hint: 'do not load this file with torch.load; get the adapter from a trusted source, preferably as adapter_model.safetensors',
  },
  PICKLE_INVALID: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the pickle is truncated or garbled: it would fail to load',
    hint: REPICKLE_HINT,
  },
  PICKLE_TOO_COMPLEX: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the pickle exceeds a scanner limit (opcodes, stack, memo, container cells, nesting)',
    hint: REPICKLE_HINT,
  },
  PICKLE_NOT_STATE_DICT: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the pickle is safe, but not a flat dict of tensor names to tensors',
    hint: 'save the adapter with PEFT (save_pretrained), preferably with safe_serialization=True',
  },
  PICKLE_DUPLICATE_KEY: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'the state dict sets the same tensor name twice (the last would silently win)',
    hint: 'save the adapter with PEFT (save_pretrained), preferably with safe_serialization=True',
  },
  PICKLE_TRAILING_BYTES: {
    level: warning,
    exit: INVALID,
    check: 'weights',
    summary: 'bytes follow the pickle STOP opcode',
  },

  // ----- the tensors against the config
  TENSOR_DTYPE: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a LoRA weight is not F32, F16 or BF16',
  },
  TENSOR_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a DoRA magnitude vector or a lora_B bias: llama.cpp cannot serve them',
  },
  TENSOR_NAME: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary:
      'a tensor name PEFT does not write: outside `base_model.model.`, with an adapter name, or a module with both linear and embedding LoRAs',
  },
  TENSOR_UNEXPECTED: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a tensor that is not a LoRA A/B matrix (a full weight, a trained bias)',
  },
  TENSOR_DUPLICATE: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a module has more than one lora_A or lora_B',
  },
  TENSOR_UNPAIRED: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a lora_A without its lora_B, or the reverse',
  },
  TENSOR_SHAPE: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'lora_A and lora_B are not both 2-D, disagree on the rank, or are empty',
  },
  TENSOR_RANK: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: "a module's rank is not the config's r (or its rank_pattern entry)",
  },
  TENSOR_UNTARGETED: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'a module has LoRA weights but target_modules does not select it',
  },
  TENSOR_NONE: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'the weights file holds no tensors',
  },
  TARGET_UNMATCHED: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary:
      'an entry of target_modules matched no LoRA tensor: that part of the adapter silently does nothing',
    hint: 'check target_modules against the tensor names, or re-export the adapter',
  },

  // ----- metadata.json and the checksums
  METADATA_JSON: {
    level: error,
    exit: INVALID,
    check: 'metadata',
    summary: 'metadata.json is not strict JSON, or not UTF-8',
  },
  METADATA_INVALID: {
    level: error,
    exit: INVALID,
    check: 'metadata',
    summary: 'metadata.json breaks its schema (named by JSON pointer, rule and value)',
  },
  ADAPTER_ID_MISMATCH: {
    level: warning,
    exit: INVALID,
    check: 'metadata',
    summary: 'the folder name is not the id in metadata.json (mount installs the adapter under its id)',
  },
  CHECKSUM_MISMATCH: {
    level: error,
    exit: INVALID,
    check: 'checksums',
    summary: "a listed file's sha256 is not the one metadata.json records",
    hint: CHECKSUM_HINT,
  },
  CHECKSUM_FILE_MISSING: {
    level: error,
    exit: INVALID,
    check: 'checksums',
    summary: 'a file metadata.json lists is missing',
    hint: CHECKSUM_HINT,
  },
  CHECKSUM_WEIGHTS_UNCOVERED: {
    level: error,
    exit: INVALID,
    check: 'checksums',
    summary: 'the checksums do not cover the weights file',
  },
  CHECKSUM_SELF: {
    level: error,
    exit: INVALID,
    check: 'checksums',
    summary: 'metadata.json lists its own checksum: a file cannot hold its own sha256',
    hint: 'remove the "metadata.json" entry from checksum.files (metadata.json needs no checksum)',
  },

  // ----- the base model (convert, verify --base, mount --base)
  BASE_NOT_MODEL: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      'the base GGUF is not a complete model: an adapter GGUF, no architecture, no token_embd.weight, no head count',
  },
  BASE_ARCH_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'the base architecture is not one codi-adapter converts for (qwen2, llama)',
  },
  BASE_UNMAPPED_MODULE: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: "a LoRA module has no tensor in llama.cpp's architecture to adapt",
  },
  BASE_TIED_LM_HEAD: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'an lm_head LoRA on a base whose output head is tied to token_embd.weight',
  },
  BASE_TIED_EMBEDDINGS: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      'an embed_tokens LoRA on a base with tied embeddings: llama.cpp would apply it to the output head as well',
  },
  BASE_INCOMPATIBLE: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      'a tensor the adapter adapts is missing from the base or has another shape, or its q/k rows cannot be split into the RoPE heads',
    hint: 'check that the adapter was trained on this base model',
  },
  GGUF_MAGIC: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: "not a GGUF file: the magic is not 'GGUF'",
  },
  GGUF_VERSION: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'a GGUF version other than 2 or 3',
  },
  GGUF_TRUNCATED: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'the GGUF file ends before what its header describes',
  },
  GGUF_INVALID: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      "the GGUF header breaks llama.cpp's loader rules: a duplicate key or tensor, a bad type, name, alignment or offset",
  },
  GGUF_LIMIT: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'a count or size in the GGUF header is beyond what the reader allows',
  },
  GGUF_KEY_MISSING: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'the GGUF file lacks a key that is needed',
  },
  GGUF_TENSOR_MISSING: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'the GGUF file lacks a tensor that is needed',
  },
  GGUF_UNSUPPORTED_TYPE: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'tensor data of a ggml type that cannot be decoded to f32',
  },
  GGUF_WRITE_INVALID: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: 'what was given to the GGUF writer breaks the format (a bug in what calls it)',
  },

  // ----- convert
  CONVERT_NEEDS_SAFETENSORS: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'convert (and mount --base) read safetensors weights only; the adapter has adapter_model.bin',
    hint: 'convert the .bin to safetensors first (torch.load(weights_only=True), then safetensors.torch.save_file)',
  },
  OUT_IS_BASE: {
    level: error,
    exit: USAGE,
    check: null,
    summary: '--out is the base model (by path, symlink or hard link)',
    hint: 'name another file with --out, or leave --out out to use the cache beside the adapter',
  },
  OUT_IN_ADAPTER: {
    level: error,
    exit: USAGE,
    check: null,
    summary: '--out is inside the adapter folder',
    hint: 'name another file with --out, or leave --out out to use the cache beside the adapter',
  },
  CACHE_UNWRITABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'no writable place for the converted GGUF',
    hint: 'pass --out <file>, or set CODI_GGUF_CACHE to a writable directory',
  },
  SOURCE_CHANGED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the weights changed while they were being converted; nothing was written',
    hint: 'convert again once the adapter files are no longer being written',
  },
  HASH_CANCELLED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'hashing a file was cancelled: the command no longer needed it',
  },
  INTERRUPTED: {
    level: error,
    exit: ExitCode.INTERRUPTED_SIGINT,
    overrides: [
      { exit: ExitCode.INTERRUPTED_SIGHUP, when: 'stopped by SIGHUP' },
      { exit: ExitCode.INTERRUPTED_SIGTERM, when: 'stopped by SIGTERM' },
    ],
    check: null,
    summary: 'convert was stopped by a signal (128 + its number); the GGUF being written was removed',
  },

  // ----- the models volume: mount, list
  ROOT_MISSING: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'the models volume does not exist',
  },
  ROOT_INACCESSIBLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'the models volume cannot be read',
  },
  ROOT_NOT_DIRECTORY: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'the models volume, or its adapters folder, is not a directory',
  },
  ROOT_NOT_WRITABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'mount cannot write to the models volume',
  },
  ROOT_PATH_UNREACHABLE: {
    level: warning,
    exit: OK,
    check: null,
    summary:
      'UID 1000 cannot pass a folder above the models volume (fine when the container bind-mounts the volume)',
  },
  ADAPTER_UNREADABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'UID 1000, the runtime user, cannot read the adapter or reach it',
  },
  ADAPTER_BEING_REPLACED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'list: the adapter is being replaced by a mount --force in progress',
    hint: 'try again in a moment',
  },
  ADAPTER_REPLACE_INTERRUPTED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'list: the adapter is missing because a mount --force died between its two renames',
    hint: 'the next codi-adapter mount on this volume puts it back (or rename the .trash-… folder to the id)',
  },
  ACTIVE_NOT_LINK: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: '`active` in the catalog is not a symbolic link, so it is not replaced',
  },
  MOUNT_CONFLICT: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'another adapter, other contents, or an invalid adapter is mounted under the id',
    hint: 'pass --force to replace it (the old copy is kept until the new one is in place), or mount under another --id',
  },
  MOUNT_ID_INVALID: {
    level: error,
    exit: INVALID,
    overrides: [{ exit: USAGE, when: 'the id was given with --id' }],
    check: null,
    summary: 'not a valid adapter id (lowercase letters, digits, ".", "_", "-"; no "..", not "active")',
    hint: 'choose an id such as qwen15b-lora-v0.1 (--id, or "id" in metadata.json)',
  },
  MOUNT_ID_MISMATCH: {
    level: error,
    exit: USAGE,
    check: null,
    summary: 'a folder already in the catalog cannot be registered under another id',
    hint: 'rename the folder, or mount a copy from outside the catalog with --id',
  },
  MOUNT_SOURCE_CHANGED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the source changed while it was copied, or the copy does not verify; nothing was mounted',
    hint: 'make sure nothing writes to the source folder during the mount, then mount again',
  },
  MOUNT_SOURCE_IS_CATALOG: {
    level: error,
    exit: USAGE,
    check: null,
    summary: 'the folder given to mount is the catalog itself',
  },
  MOUNT_SUBDIRECTORY_SKIPPED: {
    level: warning,
    exit: OK,
    check: null,
    summary: 'mount did not copy a folder inside the adapter folder',
  },

  // ----- promote: patterns/rules.yml and eval.json
  RULES_YAML_INVALID: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the rules file is not valid YAML, or not UTF-8',
    hint: 'fix the YAML syntax; the file was not changed',
  },
  RULES_NOT_MAPPING: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the top level of the rules file is not a mapping',
  },
  RULES_VERSION_MISSING: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the rules file has no top-level version (the ruleset version promote records)',
    hint: 'add e.g. version: "2026.11.0" at the top; promote records it with the adapter',
  },
  RULES_VERSION_INVALID: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the top-level version of the rules file is not a string',
  },
  RULES_LLM_ASSIST_INVALID: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the llm_assist section breaks its schema (an unknown key included)',
    hint: 'see schemas/llm-assist.schema.json for the shape of the section; the file was not changed',
  },
  EVAL_JSON: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'eval.json is not strict JSON, or not UTF-8',
  },
  EVAL_INVALID: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'eval.json breaks its schema',
    hint: 'see schemas/eval.schema.json: { suite, evaluated_at, base_model, metrics: { name: number } }',
  },
  EVAL_BASE_MISMATCH: {
    level: error,
    exit: INVALID,
    check: null,
    summary: "eval.json evaluated another base model than the adapter's",
    hint: 'give the evaluation of this adapter',
  },
  GATE_FAILED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'a metric is below its gate in llm_assist.gates.min_metrics, or the evaluation lacks it',
  },
  PROMOTE_BASE_MISMATCH: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the adapter is for another base model than the rules file declares',
    hint: 'promote an adapter trained on the rules file’s base model; the file was not changed',
  },
  PROMOTE_DOWNGRADE: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the version is lower than the one promoted',
    hint: 'bump the adapter version, or pass --force to roll back on purpose',
  },
  PROMOTE_VERSION_REUSED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the version is promoted already, with other weights',
    hint: 'give the new weights a new version, or pass --force to replace them under the same version',
  },
  YAML_SYNTAX: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the YAML to edit is not valid, or not usable',
  },
  YAML_EDIT_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the node to edit has a shape the minimal-change editor does not rewrite',
  },
  YAML_EDIT_ANCHORED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the node to edit carries an anchor an alias uses: the edit would show through the alias',
  },
  YAML_EDIT_FAILED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the edited YAML did not parse back to the intended change; nothing was written',
    hint: 'this is a bug in codi-adapter; the file was not changed. Report it with the file attached',
  },

  // ----- run
  AIRGAP_BLOCKED: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'a remote LLM_ENDPOINT that is neither loopback nor on AIRGAP_ALLOWLIST',
  },
  ADAPTER_NOT_MOUNTED: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'MODEL_MOUNT_PATH or ADAPTER_PATH is not a folder: Adapter Status: not_mounted',
  },
  BASE_MODEL_MISSING: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'BASE_MODEL_PATH is not a file',
  },
  BASE_MODEL_MISMATCH: {
    level: error,
    exit: INVALID,
    check: null,
    summary: "the adapter's base_model is not CODE_MODEL",
  },
  LLAMA_SERVER_NOT_FOUND: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'LLAMA_SERVER_BIN names no executable',
    hint: 'rebuild the image (make build-complete) or set LLAMA_SERVER_BIN to the binary (scripts/build-llama-server.sh prints its path)',
  },
  LLAMA_SERVER_BROKEN: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'llama-server cannot even print its --version',
    hint: 'rebuild the image (make build-complete) or set LLAMA_SERVER_BIN to a working binary (a copied binary needs the .so files built beside it)',
  },
  APP_NOT_FOUND: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: "the app's executable (APP_COMMAND) is not found",
    hint: 'install the app in the image, fix APP_COMMAND, or set APP_COMMAND=none to run the LLM alone',
  },
  LLM_PORT_IN_USE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'LLM_PORT is taken on LLM_HOST',
  },
  LLM_PORT_UNAVAILABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'LLM_HOST and LLM_PORT cannot be bound (no such address, or a privileged port)',
  },
  SPAWN_FAILED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'a child process (llama-server, the app) did not start',
  },
  LLM_NOT_READY: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary: 'the LLM was not healthy within LLM_READY_TIMEOUT',
  },
  LLM_EXITED: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary: 'llama-server exited, before it was healthy or while serving',
  },
  LLM_LORA_MISSING: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary: 'GET /lora-adapters does not list the adapter at scale 1',
  },
  LLM_UNHEALTHY: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary: 'the embedded LLM failed LLM_HEALTH_RETRIES health checks in a row while serving',
    hint: "raise LLAMA_CPP_THREADS (up to the host's cores) if it is merely slow, or LLM_HEALTH_RETRIES / LLM_HEALTH_INTERVAL to be more patient",
  },
  LLM_UNREACHABLE: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary: 'a remote LLM_ENDPOINT did not answer GET /health with 200',
    hint: 'check port mappings and container network, or add the host to AIRGAP_ALLOWLIST',
  },
  APP_EXITED: {
    level: error,
    exit: CHILD_DIED,
    check: null,
    summary: 'the app exited with a non-zero code or by a signal',
    hint: 'the [app] lines above say why',
  },

  // ----- the project's test kit
  TESTKIT_INVALID_TENSOR: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the test kit was asked for a .bin tensor it cannot write',
  },
} as const satisfies Record<string, CodeRow>;

export type Code = keyof typeof CODES;
type Row<C extends Code> = (typeof CODES)[C];

/** The statuses an error of code `C` may end with: its own, and its declared overrides. */
export type ExitOf<C extends Code> = C extends Code
  ? Row<C>['exit'] | (Row<C> extends { overrides: readonly { exit: infer E }[] } ? E : never)
  : never;

/** The codes whose findings are warnings (when raised). */
export type WarningCode = { [C in Code]: Row<C>['level'] extends 'warning' ? C : never }[Code];
/** The codes whose findings are errors (when raised). */
export type ErrorCode = Exclude<Code, WarningCode>;

export const ALL_CODES = Object.keys(CODES) as Code[];

export function isCode(value: string): value is Code {
  return Object.hasOwn(CODES, value);
}

export function codeRow(code: Code): CodeRow {
  return CODES[code];
}

/**
 * Whether a finding of this code says something could not be read rather than that it is wrong: a
 * report with one ends in exit 3 (the adapter may be fine; the permissions need fixing).
 */
export function isEnvironmentCode(code: Code): boolean {
  return codeRow(code).exit === ExitCode.ENVIRONMENT;
}
