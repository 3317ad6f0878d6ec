/**
 * Codes of the commands: every command, convert, the models volume (mount, list), promote and run.
 * One row each (codes.ts joins the tables into the registry).
 */
import { ExitCode, type CodeRow } from './row.js';

const error = 'error';
const warning = 'warning';
const { OK, INVALID, USAGE, ENVIRONMENT, LLM_FAILED, CHILD_DIED } = ExitCode;

export const COMMAND_CODES = {
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

  // ----- convert
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
  GGUF_CACHE_TAMPERED: {
    level: warning,
    exit: OK,
    check: null,
    summary:
      "a cached GGUF is not this adapter's conversion: its bytes differ from what converting the verified adapter writes (a file replaced or edited on the volume); it is not used, and is rebuilt",
    hint: 'find out who can write the cache folder; the entry was rebuilt from the verified adapter (where that folder is read-only, in the next writable cache folder)',
  },
  SOURCE_CHANGED: {
    level: error,
    exit: INVALID,
    check: null,
    summary:
      'the weights changed while they were being converted (or the base model while it was hashed); nothing was written',
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

  // ----- keys: sign --key, and the trusted keys of verify, mount, promote and run
  KEY_INVALID: {
    level: error,
    exit: INVALID,
    check: null,
    summary:
      'a key file holds no usable PEM key of the kind asked for (a private key to sign, public keys to trust), or its passphrase is missing or wrong',
  },
  KEY_UNSUPPORTED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'a key that is not an EC key on P-256, P-384 or P-521 (RSA, Ed25519, another curve)',
    hint: 'use an EC key on P-256, P-384 or P-521, as model_signing does: openssl ecparam -genkey -name secp384r1 -noout -out key.pem',
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
    summary:
      'UID 1000, the runtime user (for run: the user it runs as), cannot read the adapter or reach it: Adapter Status: not_mounted',
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
  MOUNT_NOT_BIN: {
    level: error,
    exit: USAGE,
    check: null,
    summary:
      'mount --to-safetensors on an adapter whose weights are not adapter_model.bin: nothing to convert',
    hint: 'mount it without --to-safetensors',
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
  ADAPTER_REVOKED: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the adapter (its id and weights checksum) is revoked in llm_assist.revoked of the rules file',
    hint: 'serve, mount or promote another version; the revocation in the rules file says why',
  },
  REVOKE_CHECKSUM_UNKNOWN: {
    level: error,
    exit: USAGE,
    check: null,
    summary: 'revoke: the id is not promoted in the rules file, so the checksum to revoke must be given',
    hint: 'give it with --checksum sha256:<64 hex of the weights file>',
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
    summary:
      'under AIRGAP, a remote LLM_ENDPOINT or the APP_HEALTH_URL leads neither to loopback (a *.localhost name must resolve to loopback only) nor to an allow-listed host',
  },
  AIRGAP_NOT_ENFORCED: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary:
      'AIRGAP=strict, and the network lets this process reach beyond loopback and the allowlist (a default route, or a route through another interface)',
    hint: 'enforce the air gap in the network: docker run --network none, an internal network whose address block is in AIRGAP_ALLOWLIST, or a Kubernetes NetworkPolicy (docs/reference.md, "The air gap"); or set AIRGAP=true to start with a warning',
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
  BASE_MODEL_UNREADABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary:
      'the user run runs as (UID 1000 in the image) cannot read BASE_MODEL_PATH or pass a folder on its way',
  },
  BASE_MODEL_MISMATCH: {
    level: error,
    exit: INVALID,
    check: null,
    summary: "the adapter's base_model is not CODE_MODEL",
  },
  ADAPTER_ID_CLAIMED: {
    level: error,
    exit: INVALID,
    check: null,
    summary:
      'two adapters of the served set claim one id (their metadata.json id), or an adapter claims the base id CODE_MODEL: a request naming it would be ambiguous',
    hint: 'unmount or rename one of them (codi-adapter mount --id), so that each id names one adapter',
  },
  ADAPTER_OVER_CAP: {
    level: warning,
    exit: OK,
    check: null,
    summary:
      'more adapters than LLM_MAX_ADAPTERS: the most recently promoted (and the default) are served, this one is not',
    hint: 'raise LLM_MAX_ADAPTERS, or name the adapters to serve in ADAPTERS',
  },
  SERVED_SET_EMPTY: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'ADAPTERS (or the rules file) names no adapter that is mounted and valid for CODE_MODEL',
    hint: 'mount and promote an adapter for CODE_MODEL, or set ADAPTERS to ids of the catalog (codi-adapter list)',
  },
  GGUF_CHANGED: {
    level: error,
    exit: INVALID,
    check: null,
    summary:
      'the GGUF proven to be the conversion of the verified adapter changed before llama-server had loaded it (replaced or written to in its cache folder); nothing is served',
    hint: 'find out what writes the GGUF cache folder, then start run again: it proves the entry anew',
  },
  STATE_DIR_NOT_DIRECTORY: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'CODI_STATE_DIR, or a folder on the way to it, is a file',
    hint: 'remove the file in the way, or set CODI_STATE_DIR to a writable folder',
  },
  STATE_DIR_NOT_WRITABLE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'CODI_STATE_DIR cannot be created or written: permission denied, or no space left',
    hint: 'make the folder writable by this user (chown or chmod), or set CODI_STATE_DIR to a writable folder',
  },
  STATE_DIR_READ_ONLY: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'CODI_STATE_DIR is on a read-only file system',
    hint: 'mount a writable volume or a tmpfs there, or set CODI_STATE_DIR to a writable folder',
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
  ENV_TOO_LARGE: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary:
      'the environment or command line a child would get is larger than Linux allows (E2BIG): one variable over 128 KiB, or all of them over a quarter of the stack limit',
    hint: 'shorten the variable named (AIRGAP_ALLOWLIST: list domains with a leading dot rather than each host), or raise the stack limit (ulimit -s)',
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
    summary: "llama-server's GET /lora-adapters does not list exactly the adapters verified",
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

  // ----- reload
  RELOAD_FAILED: {
    level: error,
    exit: LLM_FAILED,
    check: null,
    summary:
      'a reload did not switch the gateway (the new llama-server did not start, was not healthy, or the new served set is invalid): the old set is still served',
    hint: 'the [run] lines of run say why; fix it and reload again',
  },
  RELOAD_NO_RUN: {
    level: error,
    exit: ENVIRONMENT,
    check: null,
    summary: 'codi-adapter reload found no run serving through the gateway in CODI_STATE_DIR',
    hint: 'start run with an embedded LLM (LLM_ENABLED=true, no remote LLM_ENDPOINT), and give reload the same CODI_STATE_DIR',
  },

  // ----- the project's test kit
  TESTKIT_INVALID_TENSOR: {
    level: error,
    exit: INVALID,
    check: null,
    summary: 'the test kit was asked for a .bin tensor it cannot write',
  },
} as const satisfies Record<string, CodeRow>;
