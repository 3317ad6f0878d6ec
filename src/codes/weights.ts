/**
 * Codes about weights files and the base model: safetensors, PyTorch .bin (zip and pickle), GGUF. One
 * row each (codes.ts joins the tables into the registry).
 */
import { ARCH_NAMES } from '../arch.js';
import { SAFETENSORS_DTYPES } from '../formats/safetensors-spec.js';
import { ExitCode, type CodeRow } from './row.js';

const error = 'error';
const warning = 'warning';
const { INVALID } = ExitCode;

const REPICKLE_HINT =
  're-save the adapter with torch.save or PEFT save_pretrained, preferably as safetensors';
const BIN_TO_SAFETENSORS_HINT =
  'convert it to adapter_model.safetensors in a trusted environment, e.g. safetensors.torch.save_file(torch.load(path, weights_only=True), "adapter_model.safetensors")';
const UNSAFE_PICKLE_HINT =
  'do not load this file with torch.load; get the adapter from a trusted source, preferably as adapter_model.safetensors';
const NOT_TORCH_ZIP_HINT =
  'the file is not a PyTorch archive as torch.save writes it; re-save it, or convert it to safetensors';

export const WEIGHT_CODES = {
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
    hint: 'codi-adapter mount <dir> --to-safetensors installs it with adapter_model.safetensors, converted without unpickling it',
  },
  BIN_LEGACY_FORMAT: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the legacy (non-zip) torch.save format (torch before 1.6, or any torch with _use_new_zipfile_serialization=False), its tar form, or a bare pickle: unsupported',
    hint: BIN_TO_SAFETENSORS_HINT,
  },
  BIN_NOT_TORCH_ZIP: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'a zip archive, but not laid out as torch.save writes it (one folder, that of the first entry, holding data.pkl; a version record of 1 to 10)',
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
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'a storage entry holds more bytes than its declared size (torch.save writes exactly that many; torch 2.10 and later refuse it)',
    hint: NOT_TORCH_ZIP_HINT,
  },
  BIN_UNREFERENCED_STORAGE: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary: 'a data/<key> entry, or a storage the pickle loads, that no tensor of the state dict uses',
    hint: NOT_TORCH_ZIP_HINT,
  },
  BIN_UNEXPECTED_ENTRY: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'an entry torch.save does not write: a second pickle (constants.pkl makes torch.load run the TorchScript loader), or any other file',
    hint: NOT_TORCH_ZIP_HINT,
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
      'the archive is inconsistent, or could read as another archive to another reader: bad signature, offsets or sizes out of range, overlapping or duplicate entries, names equal but for case, bytes no entry accounts for (before, between or after the entries), an end-record comment, a directory with data, a local header disagreeing with the central directory, a CRC-32 mismatch, a file that does not start with a local header',
    hint: NOT_TORCH_ZIP_HINT,
  },
  BIN_ZIP_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the archive uses a feature PyTorch archives never use: encryption, patched data, several disks, a compression method other than STORED or DEFLATE',
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
      'the pickle names a global off the allow-list (os.system, builtins.eval, …), builds a global from computed strings, calls or mutates something only code could, allocates memory of any size, uses an opcode outside the allow-list, or would load differently in torch than the scanner reads it (an argument across a frame boundary, BUILD on a tensor, a rebuild state that sets attributes, arguments NEWOBJ ignores)',
    hint: UNSAFE_PICKLE_HINT,
  },
  PICKLE_INVALID: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the pickle is truncated or garbled, or holds a value CPython refuses (a text number, a string that is not UTF-8, a storage on the meta device): it would fail to load',
    hint: REPICKLE_HINT,
  },
  PICKLE_TOO_COMPLEX: {
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'the pickle exceeds a scanner limit (opcodes, stack, memo entries or memo index, container cells, nesting)',
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
    level: error,
    exit: INVALID,
    check: 'weights',
    summary:
      'bytes follow the pickle STOP opcode (a second pickle, or anything else torch.save never writes)',
    hint: UNSAFE_PICKLE_HINT,
  },

  // ----- the base model (convert, verify --base, mount --base)
  BASE_NOT_MODEL: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      'the base GGUF is not a complete model: an adapter GGUF, no architecture, no token_embd.weight, no head count, or an output head its architecture cannot have (missing where required, present where tied)',
  },
  BASE_ARCH_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: `the base architecture is not one codi-adapter converts for (${ARCH_NAMES.join(', ')})`,
  },
  BASE_UNMAPPED_MODULE: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary: "a LoRA module has no tensor in llama.cpp's architecture to adapt",
  },
  BASE_OTHER_TOWER_SKIPPED: {
    level: warning,
    exit: INVALID,
    check: 'base',
    summary:
      "LoRA modules of another tower of the checkpoint (gemma3's vision encoder) are left out: the GGUF is the text model only",
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
  BASE_ALORA_TOKENS: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      "an activated LoRA's invocation token id is not in the base model's vocabulary: the adapter would never activate",
    hint: "check that the adapter was trained on this base model, and that alora_invocation_tokens holds that model's token ids",
  },
  BASE_INCOMPATIBLE: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      'a tensor the adapter adapts is missing from the base or has another shape, or its q/k rows cannot be split into the RoPE heads',
    hint: 'check that the adapter was trained on this base model',
  },
  BASE_MISMATCH: {
    level: error,
    exit: INVALID,
    check: 'base',
    summary:
      "the base GGUF's sha256 is not the one metadata.json records for the adapter (base.sha256): another model, or another build of it",
    hint: 'use the base model the adapter was mounted or promoted with; to bind it to this one instead, mount it again with --base and --force',
  },
  BASE_UNRECORDED: {
    level: warning,
    exit: INVALID,
    check: 'base',
    summary:
      'metadata.json records no base model sha256 (base.sha256): only the shapes tell whether this base is the one the adapter was trained on',
    hint: 'mount the adapter with --base <gguf> (or promote it with --base) to record the base model it is served on',
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
} as const satisfies Record<string, CodeRow>;
