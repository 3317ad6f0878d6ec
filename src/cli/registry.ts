/**
 * Every command, declared once: its arguments and flags, its help text, and a lazy loader of its
 * behaviour (src/cli/<name>.ts). The front door (src/cli/main.ts) parses every command line against
 * these specs, and oclif's command classes, for help and the manifest, are generated from them
 * (src/cli/oclif.ts). Light on purpose: it is read before any command's code is loaded.
 */
import { DEFAULT_MODEL_ROOT, OUTTYPES } from '../constants.js';
import { defaultText, RUN_SETTINGS } from '../run/settings.js';
import type { CommandMain, CommandSpec, FlagSpec } from './spec.js';

export interface CommandEntry {
  readonly spec: CommandSpec;
  readonly summary: string;
  readonly description: string;
  /** `<%= config.bin %>` stands for the program's name */
  readonly examples: readonly string[];
  /** the command's behaviour, loaded when it runs */
  readonly load: () => Promise<CommandMain>;
  /** the argument naming an adapter directory whose weights are hashed while the command loads */
  readonly earlyHash?: string;
}

/** `--trust`, the public keys an adapter must be signed by (verify, mount, promote) */
const trustFlag = {
  kind: 'string',
  description:
    'trusted public keys: a PEM file, or a folder of .pem files; the adapter must carry a model.sig signed by one of them',
  env: 'CODI_TRUST_KEYS',
} as const;

/** `--rules`, the rules file whose llm_assist.revoked mount and list honour */
const revocationRulesFlag = {
  kind: 'string',
  description: 'rules file (patterns/rules.yml) whose llm_assist.revoked lists revoked adapters',
  env: 'PATTERNS_RULES',
} as const;

/** `--root`, the models volume, for the commands that work on it (list, mount) */
const modelRootFlag = {
  kind: 'string',
  description: 'models volume root',
  env: 'MODEL_MOUNT_PATH',
  default: DEFAULT_MODEL_ROOT,
} as const;

const convert: CommandEntry = {
  summary: 'Convert a PEFT safetensors LoRA into a llama.cpp GGUF LoRA adapter',
  description:
    "Natively, with no Python: the architecture and shapes come from the base GGUF, so it works air-gapped. The adapter is verified first. The GGUF makes llama.cpp apply exactly PEFT's scale for every module (lora_alpha/r, lora_alpha/sqrt(r) with use_rslora, rank_pattern and alpha_pattern): what llama.cpp's single alpha cannot express is folded into lora_b. Without --out the result is cached next to the adapter (<parent>/.gguf-cache), keyed by the weights checksum, config, outtype and arch.",
  examples: [
    '<%= config.bin %> convert examples/adapters/tiny-qwen2-lora --base examples/base/tiny-qwen2.gguf',
    '<%= config.bin %> convert /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --outtype q8_0 --out /tmp/lora.gguf',
  ],
  spec: {
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
  },
  load: async () => (await import('./convert.js')).convertMain,
};

const verify: CommandEntry = {
  summary: 'Verify a PEFT LoRA adapter directory',
  description:
    'Checks layout, adapter_config.json, the safetensors header (strictly) or the .bin pickle (scanned, never loaded), tensors against the config, metadata.json against its schema, sha256 checksums (streamed), with --trust that model.sig (OpenSSF Model Signing) is signed by a trusted key over exactly the files present (each file hashed once for both), and with --base that llama.cpp will accept the adapter on that base model. Exit 0 when valid (warnings allowed), 1 when invalid, 3 when a path cannot be read.',
  examples: [
    '<%= config.bin %> verify examples/adapters/tiny-qwen2-lora',
    '<%= config.bin %> verify /models/adapters/qwen15b-lora-v0.1 --base /models/base/qwen2.5-coder-1.5b.gguf --strict --json',
    '<%= config.bin %> verify /models/adapters/qwen15b-lora-v0.1 --trust /etc/codi/trusted-keys/',
  ],
  spec: {
    args: [{ name: 'dir', description: 'adapter directory', required: true }],
    flags: {
      strict: { kind: 'boolean', description: 'treat every warning as an error' },
      trust: trustFlag,
      base: {
        kind: 'string',
        description: 'base model GGUF: also check that llama.cpp will accept the adapter on it',
      },
    },
  },
  load: async () => (await import('./verify.js')).verifyMain,
  earlyHash: 'dir',
};

const sign: CommandEntry = {
  summary: 'Sign an adapter: write model.sig (OpenSSF Model Signing, key-based)',
  description:
    'Verifies the adapter (fail closed), hashing every file once, and writes <dir>/model.sig atomically: a Sigstore bundle whose DSSE envelope signs an in-toto statement listing every file and its sha256, exactly as `model_signing sign key` writes it, so `model_signing verify key` and `codi-adapter verify --trust` accept it. The key is a PEM EC private key on P-256, P-384 or P-521; an encrypted one takes its passphrase from CODI_SIGN_PASSPHRASE. Exit 0 signed, 1 the adapter is invalid or the key unusable, 2 usage, 3 a file cannot be read or written.',
  examples: [
    '<%= config.bin %> sign examples/adapters/tiny-qwen2-lora --key release-key.pem',
    '<%= config.bin %> sign /incoming/qwen15b-lora-v0.2 --key /secure/release-key.pem --json',
  ],
  spec: {
    args: [{ name: 'dir', description: 'adapter directory', required: true }],
    flags: {
      key: {
        kind: 'string',
        description: 'PEM EC private key (P-256, P-384 or P-521)',
        required: true,
      },
    },
  },
  load: async () => (await import('./sign.js')).signMain,
  earlyHash: 'dir',
};

const list: CommandEntry = {
  summary: 'List the adapters in the models volume',
  description:
    'Scans <root>/adapters/*: id, version, base model, weights checksum (short), size, status (mounted, invalid with the first finding, or not_mounted when UID 1000 cannot read it), and a * on the active adapter. Without --verify it reads layout, headers and metadata only (fast; the checksum shown is the recorded one); --verify re-hashes every file and exits 1 if any adapter is invalid.',
  examples: ['<%= config.bin %> list --root /models', '<%= config.bin %> list --verify --json'],
  spec: {
    args: [],
    flags: {
      root: modelRootFlag,
      verify: { kind: 'boolean', description: 'recompute every checksum (reads all the weights)' },
      rules: revocationRulesFlag,
    },
  },
  load: async () => (await import('./list.js')).listMain,
};

const mount: CommandEntry = {
  summary: 'Install or register an adapter in the models volume',
  description:
    'A folder already in <root>/adapters/ is registered in place. Any other folder is installed: copied to a hidden staging folder in <root>/adapters/, verified again there, fsynced, and renamed into <root>/adapters/<id> in one step, so a reader never sees half an adapter. An id that already holds the same checksums is left as it is; other contents are never replaced without --force. With --to-safetensors a .bin adapter is installed with adapter_model.safetensors, converted natively (never unpickled), instead of its pickle. Checks that UID 1000 (the runtime user) can read every file. Prints "Adapter Status: mounted|not_mounted|invalid". Exit 0 mounted, 1 invalid or conflicting, 2 usage, 3 environment (volume missing or not writable, unreadable, lock held).',
  examples: [
    '<%= config.bin %> mount examples/adapters/tiny-qwen2-lora --root /models --activate',
    '<%= config.bin %> mount /incoming/qwen15b-lora-v0.2 --base /models/base/qwen2.5-coder-1.5b.gguf --activate --json',
    '<%= config.bin %> mount /models/adapters/qwen15b-lora-v0.1',
    '<%= config.bin %> mount /incoming/qwen15b-lora-v0.3-bin --id qwen15b-lora-v0.3 --to-safetensors',
  ],
  spec: {
    args: [{ name: 'source', description: 'adapter folder', required: true }],
    flags: {
      root: modelRootFlag,
      id: { kind: 'string', description: 'install under this id (default: metadata.json id)' },
      base: {
        kind: 'string',
        description:
          "base model GGUF: check compatibility, record its sha256 and name in the mounted adapter's metadata.json (verify --base, convert and run then refuse any other base), and build the llama.cpp adapter now, so run starts fast",
      },
      activate: {
        kind: 'boolean',
        description: 'point <root>/adapters/active at this adapter (atomically)',
      },
      force: {
        kind: 'boolean',
        description:
          'replace an id that holds other contents; with --base, bind the adapter to that base even if it records another',
      },
      'to-safetensors': {
        kind: 'boolean',
        description:
          'install a .bin adapter with adapter_model.safetensors converted from it natively (never unpickled) instead of the .bin; the .bin sha256 is recorded in metadata.json converted_from',
      },
      trust: trustFlag,
      rules: revocationRulesFlag,
      'lock-timeout': {
        kind: 'integer',
        description: 'seconds to wait for another mount to finish',
        default: 60,
        min: 0,
      },
    },
  },
  load: async () => (await import('./mount.js')).mountMain,
};

const promote: CommandEntry = {
  summary: 'Promote an adapter into patterns/rules.yml',
  description:
    'Verifies the adapter (fail closed), checks the evaluation against llm_assist.gates.min_metrics (a missing metric fails its gate), records the adapter under llm_assist.adapters.<id> and appends the evaluation to its metadata.json. Comments, order, quoting and every untouched byte of rules.yml are kept. Both writes are atomic and serialised by <rules>.lock. Promoting the same version and checksum again changes nothing. Exit 0 promoted, 1 invalid / gate failed / refused, 3 environment (file missing, lock held).',
  examples: [
    '<%= config.bin %> promote examples/adapters/tiny-qwen2-lora --rules examples/patterns/rules.yml --eval examples/eval.json --dry-run',
    '<%= config.bin %> promote /models/adapters/qwen15b-lora-v0.2 --rules patterns/rules.yml --eval eval.json --default --json',
  ],
  spec: {
    args: [{ name: 'dir', description: 'adapter directory', required: true }],
    flags: {
      rules: { kind: 'string', description: 'the rules file (patterns/rules.yml)', required: true },
      eval: {
        kind: 'string',
        description: 'evaluation (eval.json); default: the newest record in metadata.json evaluations',
      },
      base: {
        kind: 'string',
        description:
          "base model GGUF it is served on: checked (llama.cpp accepts the adapter on it, and it is the base metadata.json records, if any), then its sha256 and name recorded in the rules and, when it records none, in the adapter's metadata.json",
      },
      'dry-run': { kind: 'boolean', description: 'print the unified diff, write nothing' },
      trust: trustFlag,
      default: {
        kind: 'boolean',
        description: 'make it llm_assist.default_adapter (it becomes the default anyway when none is set)',
      },
      force: {
        kind: 'boolean',
        description:
          'allow a version downgrade, other weights under an already promoted version, or another base for it',
      },
      'lock-timeout': {
        kind: 'integer',
        description: 'seconds to wait for another promote of the same rules file',
        default: 10,
        min: 0,
      },
    },
  },
  load: async () => (await import('./promote.js')).promoteMain,
};

const revoke: CommandEntry = {
  summary: 'Revoke an adapter version in patterns/rules.yml',
  description:
    'Records llm_assist.revoked.<id>: {checksum, reason, revoked_at}, keeping every other byte of the rules file, atomically and under the same lock as promote. The checksum is the weights checksum promoted under the id, or --checksum. run, mount and promote then refuse the adapter when its id and weights checksum match, with ADAPTER_REVOKED; list shows it. Revoking the same version again changes nothing. Exit 0 revoked (or already), 1 the rules file is invalid, 2 usage (no checksum known), 3 a file is missing or a lock is held.',
  examples: [
    '<%= config.bin %> revoke qwen15b-lora-v0.1 --rules patterns/rules.yml --reason "leaks training data (INC-123)"',
    '<%= config.bin %> revoke qwen15b-lora-v0.1 --rules patterns/rules.yml --reason "bad build" --checksum sha256:<64 hex> --json',
  ],
  spec: {
    args: [{ name: 'id', description: 'adapter id', required: true }],
    flags: {
      rules: { kind: 'string', description: 'the rules file (patterns/rules.yml)', required: true },
      reason: { kind: 'string', description: 'why it is revoked (recorded)', required: true },
      checksum: {
        kind: 'string',
        description: 'the weights checksum to revoke, sha256:<hex> (default: the one promoted under the id)',
      },
      'dry-run': { kind: 'boolean', description: 'print the unified diff, write nothing' },
      'lock-timeout': {
        kind: 'integer',
        description: 'seconds to wait for a promote or revoke of the same rules file',
        default: 10,
        min: 0,
      },
    },
  },
  load: async () => (await import('./revoke.js')).revokeMain,
};

/** `run`'s flags: one per setting row, unset unless given (the variable, then the default, decide). */
function settingFlags(): Record<string, FlagSpec> {
  return Object.fromEntries(
    RUN_SETTINGS.map((s): [string, FlagSpec] => {
      const description = `${s.description} [env ${s.name}; default: ${defaultText(s)}]`;
      const flag: FlagSpec =
        s.kind === 'boolean' || s.kind === 'airgap'
          ? {
              kind: 'boolean',
              allowNo: true,
              allowValue: true,
              ...(s.kind === 'airgap' ? { words: ['strict'] } : {}),
              unset: true,
              description,
              helpGroup: 'SETTINGS',
            }
          : { kind: 'string', allowEmpty: true, description, helpGroup: 'SETTINGS' };
      return [s.flag, flag];
    }),
  );
}

const run: CommandEntry = {
  summary: 'Serve the mounted adapter with llama-server and start the app (the container entrypoint)',
  description: `Resolves the configuration (every setting is an environment variable and the flag named after it; the flag wins), validates MODEL_MOUNT_PATH and ADAPTER_PATH, verifies the adapter, converts it to GGUF (cached), starts llama-server on loopback, waits for GET /health, checks GET /lora-adapters lists the adapter, serves it through the gateway on LLM_HOST:LLM_PORT, writes environment.json to CODI_STATE_DIR, starts APP_COMMAND with LLM_ENDPOINT and CODI_ENVIRONMENT_FILE, then supervises both: child output is prefixed [llm]/[app]; SIGTERM/SIGINT stop the app, then the LLM, gracefully and then by force.

Exit status: 0 stopped by a signal, or the app finished with exit code 0; 1 the adapter is invalid; 2 a setting is malformed; 3 the environment is wrong (adapter not mounted, llama-server missing, port in use, remote endpoint not allowed); 4 the LLM failed to start or became unhealthy; 5 the app died.

With --json the children's lines and progress go to stderr, and one JSON object describing the outcome is printed on stdout when run ends.`,
  examples: [
    '<%= config.bin %> run',
    'MODEL_MOUNT_PATH=/srv/models LLAMA_SERVER_BIN=$(scripts/build-llama-server.sh) <%= config.bin %> run --app-command none',
    '<%= config.bin %> run --llm-endpoint http://llm.internal.example.com:8081 --airgap-allowlist llm.internal.example.com',
  ],
  spec: { args: [], flags: settingFlags() },
  load: async () => (await import('./run.js')).runMain,
};

const reload: CommandEntry = {
  summary: 'Reload the adapters a running run serves through its gateway, without dropping a request',
  description:
    'Finds the run serving through a gateway by the run.json it keeps in CODI_STATE_DIR and sends it SIGHUP (as kill -HUP does). run prepares the served set again (ADAPTERS, the rules file, the catalog), starts a second llama-server with it, waits until it is healthy and lists the set, switches the gateway to it, and lets the old server finish its requests (DRAIN_TIMEOUT) before stopping it. reload waits for that outcome. Exit 0 switched, 3 no run serving through a gateway there, 4 the reload failed (the old set is still served; run says why).',
  examples: [
    '<%= config.bin %> reload',
    '<%= config.bin %> reload --state-dir /tmp/codi-adapter --json',
    'docker exec codi codi-adapter reload',
  ],
  spec: {
    args: [],
    flags: {
      'state-dir': {
        kind: 'string',
        description: "run's CODI_STATE_DIR",
        env: 'CODI_STATE_DIR',
        default: '/tmp/codi-adapter',
      },
      timeout: {
        kind: 'integer',
        description: 'seconds to wait for the outcome (a large model takes as long to load as at start)',
        default: 300,
        min: 1,
      },
      'no-wait': { kind: 'boolean', description: 'send the signal and return' },
    },
  },
  load: async () => (await import('./reload.js')).reloadMain,
};

/** Every command by name: the only list of them. */
export const COMMANDS = {
  convert,
  list,
  mount,
  promote,
  reload,
  revoke,
  run,
  sign,
  verify,
} as const satisfies Readonly<Record<string, CommandEntry>>;

export function commandNamed(name: string): CommandEntry | undefined {
  return Object.hasOwn(COMMANDS, name) ? (COMMANDS as Record<string, CommandEntry>)[name] : undefined;
}
