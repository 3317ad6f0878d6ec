/**
 * Codes about an adapter's own files: the folder, adapter_config.json, the tensors, metadata.json and
 * the checksums. One row each (codes.ts joins the tables into the registry).
 */
import { ExitCode, type CodeRow } from './row.js';

const error = 'error';
const warning = 'warning';
const { INVALID, USAGE } = ExitCode;

const CHECKSUM_HINT =
  're-copy the adapter files, or regenerate metadata.json checksums if the change is intended';

export const ADAPTER_CODES = {
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
      'a feature a llama.cpp LoRA cannot express: not LoRA, DoRA, modules_to_save, bias, fan_in_fan_out, lora_bias, layer_replication, target_parameters, QALoRA, BD-LoRA, Arrow, MonteCLoRA, Megatron layers, an init_lora_weights it does not know',
  },
  CONFIG_ALORA_ONE_TOKEN: {
    level: warning,
    exit: INVALID,
    check: 'config',
    summary:
      'an activated LoRA invoked by one token: llama-server applies it from the token before that one, PEFT from the token itself',
  },
  CONFIG_ALORA_STRING: {
    level: error,
    exit: INVALID,
    check: 'config',
    summary:
      'an activated LoRA that names its invocation as invocation_string, without alora_invocation_tokens: the tokens it activates at are unknown',
    hint: "record the token ids in adapter_config.json as PEFT 0.18 does: alora_invocation_tokens = tokenizer.encode(invocation_string, add_special_tokens=False) with the base model's tokenizer (adapters of IBM's older alora package activate after the first of those tokens: leave it out), then regenerate the metadata.json checksums",
  },
  CONFIG_BASE_MODIFIED: {
    level: error,
    exit: INVALID,
    check: 'config',
    summary:
      "init_lora_weights is pissa, olora, corda, loftq or lora_ga (or kasa_config is set): the adapter is right only on PEFT's modified base weights",
    hint: 'convert it back to a plain LoRA with PEFT: model.save_pretrained(out, path_initial_model_for_weight_conversion=<the adapter saved before training>); its config then says init_lora_weights: true, with twice the rank',
  },
  CONFIG_TRAINABLE_TOKENS: {
    level: error,
    exit: INVALID,
    check: 'config',
    summary:
      'trainable_token_indices: trained rows of the token embedding replace the base rows, which a llama.cpp LoRA cannot carry',
    hint: 'train without trainable_token_indices (or with a LoRA on embed_tokens on an untied base)',
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

  // ----- the tensors against the config
  TENSOR_ALORA_EMBEDDING: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary:
      'an embedding LoRA in an activated LoRA: PEFT applies it to every token, llama-server only from the invocation on',
    hint: 'train the activated LoRA without embed_tokens in target_modules',
  },
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
  TENSOR_EMBEDDING_COPY: {
    level: warning,
    exit: INVALID,
    check: 'tensors',
    summary:
      "PEFT's full copy of a targeted embedding layer's base weight (save_embedding_layers): skipped, as llama.cpp's converter skips it",
    hint: 'save the adapter with save_embedding_layers=False to leave the copy out',
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
  TARGET_NONE: {
    level: error,
    exit: INVALID,
    check: 'tensors',
    summary: 'no entry of target_modules matched any LoRA tensor (PEFT refuses such a config)',
    hint: 'check target_modules against the tensor names, or re-export the adapter',
  },
  TARGET_UNMATCHED: {
    level: warning,
    exit: INVALID,
    check: 'tensors',
    summary:
      'an entry of target_modules matched no LoRA tensor (PEFT too lets an entry match nothing, as long as another matches)',
    hint: 'check target_modules against the tensor names, or re-export the adapter',
  },

  // ----- model.sig, the signature (verify --trust, mount --trust, run with ADAPTER_TRUST_KEYS)
  SIGNATURE_MISSING: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary: 'trusted keys were given, but the adapter has no model.sig',
    hint: 'sign the adapter: codi-adapter sign <dir> --key <private.pem> (or model_signing sign key)',
  },
  SIGNATURE_INVALID: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary:
      "model.sig is not a valid signature: not a model_signing bundle, a statement that does not hold, or a signature that does not verify with the signer's key",
    hint: 'sign the adapter again (codi-adapter sign), or re-copy model.sig from the release',
  },
  SIGNATURE_UNTRUSTED_KEY: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary: 'model.sig is signed by a key that is not one of the trusted keys',
    hint: "add the signer's public key to the trusted keys (--trust, CODI_TRUST_KEYS, ADAPTER_TRUST_KEYS) if you trust it",
  },
  SIGNATURE_FILES_DIFFER: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary:
      'the files present are not the files model.sig signs: one added, removed, renamed or changed, or an adapter file the signature leaves out',
    hint: 're-copy the adapter from the release, or sign it again if the change is intended',
  },
  SIGNATURE_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary:
      'model.sig is a certificate or keyless (Sigstore) bundle, or uses a serialization other than files/sha256: it cannot be verified offline with a public key',
    hint: 'sign the adapter with a key (codi-adapter sign, or model_signing sign key) for offline verification',
  },
  SIGNATURE_TOO_LARGE: {
    level: error,
    exit: INVALID,
    check: 'signature',
    summary: "model.sig is larger than 16 MiB, far more than an adapter's signature takes; it is not read",
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
} as const satisfies Record<string, CodeRow>;
