/**
 * `run`'s settings, as data: one row each (`RUN_SETTINGS`: name, flag, kind, default, bounds,
 * description). The flags, their parsing and checks (src/config.ts), `--help`, the configuration
 * `run` prints and the README's settings table all come from these rows; a new setting, or a new
 * column, is written here once. Every setting is an environment variable and a flag
 * (`LLM_PORT` ↔ `--llm-port`).
 */
import { join } from 'node:path';
import { DEFAULT_MODEL_ROOT } from '../constants.js';
import { CodiError, ExitCode } from '../errors.js';
import type { AllowEntry } from './airgap.js';

/** The adapter served by default, below `<MODEL_MOUNT_PATH>/adapters/`. */
export const DEFAULT_ADAPTER_ID = 'qwen15b-lora-v0.1';
export const DEFAULT_APP_COMMAND = 'uvicorn api.server:app --host 0.0.0.0 --port 8000';

/** What a setting's value is, and so how it is read and checked. */
export interface KindValue {
  /** a file or folder, resolved against the working directory */
  path: string;
  /** trusted public keys: a PEM file or a folder of them, resolved ("none" or empty: none) */
  keys: string | null;
  /** a model id (not a path) */
  id: string;
  /** an address or host name */
  host: string;
  /** a program: a name looked up on PATH when started, or a path (it has a slash), resolved */
  program: string;
  /** a command line ("none": none) */
  command: AppCommand | null;
  /** true/false, 1/0, yes/no, on/off */
  boolean: boolean;
  port: number;
  /** a whole number within the row's bounds */
  count: number;
  /** seconds (decimals and an `s` suffix allowed), as milliseconds */
  seconds: number;
  /** an http(s) base URL ("auto"/"none": null) */
  url: string | null;
  /** an http(s) URL to GET, a query allowed ("none": null) */
  probe: string | null;
  /** comma-separated hosts, addresses and address blocks (a name matches its subdomains) */
  hosts: AllowEntry[];
  /** text, as given (empty: null) */
  text: string | null;
  /** the air gap: off, on (the guard, warning when egress is possible), or strict (refused then) */
  airgap: AirgapMode;
  /** which adapters the gateway serves (empty: decided by the rules file) */
  adapters: AdapterSelection | null;
}

/**
 * ADAPTERS: a comma list of adapter ids, `promoted` (llm_assist.adapters) or `all` (the catalog);
 * `single` is never parsed from ADAPTERS: it is run's one adapter at ADAPTER_PATH (or `active`).
 */
export type AdapterSelection =
  { kind: 'promoted' } | { kind: 'all' } | { kind: 'ids'; ids: string[] } | { kind: 'single' };

export type AirgapMode = 'off' | 'on' | 'strict';
export type SettingKind = keyof KindValue;

/** What the settings resolved so far give a computed default. */
export interface DefaultContext {
  settings: Readonly<Partial<Record<string, string>>>;
  isDirectory: (path: string) => boolean;
}

/** One setting of `run`: everything about it is this row (parsing, checks, --help, README, the print). */
export interface SettingRow {
  /** the environment variable; also the setting's name in the configuration print and environment.json */
  readonly name: string;
  /** the command-line flag, without its dashes */
  readonly flag: string;
  readonly kind: SettingKind;
  /** the value when neither flag nor variable gives one, as text; a function of the settings above it */
  readonly default: string | ((context: DefaultContext) => string);
  /** the default as documented, where it is computed or reads better in words */
  readonly defaultText?: string;
  /** bounds of a number; `above` refuses the minimum itself */
  readonly min?: number;
  readonly max?: number;
  readonly above?: boolean;
  /** what a count counts, for its messages ("threads": "a whole number of threads ≥ 1") */
  readonly unit?: string;
  /** shown in --help and the README table */
  readonly description: string;
  /**
   * its value is a secret: never printed nor recorded (`***` where it is set), though the children
   * that need it get it
   */
  readonly secret?: boolean;
}

export const RUN_SETTINGS = [
  {
    name: 'MODEL_MOUNT_PATH',
    flag: 'model-mount-path',
    kind: 'path',
    default: DEFAULT_MODEL_ROOT,
    description: 'models volume root',
  },
  {
    name: 'ADAPTER_PATH',
    flag: 'adapter-path',
    kind: 'path',
    // `mount --activate` points adapters/active at an id; serving it by default is what that is for
    default: ({ settings, isDirectory }) => {
      const adapters = join(settings.MODEL_MOUNT_PATH ?? DEFAULT_MODEL_ROOT, 'adapters');
      return isDirectory(join(adapters, 'active'))
        ? join(adapters, 'active')
        : join(adapters, DEFAULT_ADAPTER_ID);
    },
    defaultText: `<MODEL_MOUNT_PATH>/adapters/active if it exists (mount --activate), else <MODEL_MOUNT_PATH>/adapters/${DEFAULT_ADAPTER_ID}`,
    description: 'adapter directory to serve',
  },
  {
    name: 'ADAPTER_TRUST_KEYS',
    flag: 'adapter-trust-keys',
    kind: 'keys',
    default: 'none',
    description:
      'trusted public keys (a PEM file, or a folder of .pem files): serve only an adapter whose model.sig one of them signed; none: no signature needed',
  },
  {
    name: 'ADAPTERS',
    flag: 'adapters',
    kind: 'adapters',
    default: '',
    defaultText: 'promoted when the rules file lists adapters, else one adapter (ADAPTER_PATH)',
    description:
      'the adapters the gateway serves: a comma list of ids, promoted (llm_assist.adapters that are mounted and valid) or all (every valid adapter in the catalog for CODE_MODEL); llama-server listens on loopback only and the gateway takes LLM_HOST:LLM_PORT; unset, an ADAPTER_PATH given (or a rules file listing none) serves that one adapter, as a set of one',
  },
  {
    name: 'LLM_MAX_ADAPTERS',
    flag: 'llm-max-adapters',
    kind: 'count',
    default: '32',
    min: 1,
    max: 1024,
    unit: 'adapters',
    description:
      'how many adapters llama-server loads at most; over it the most recently promoted are kept (the default adapter always) and the rest are reported as not served',
  },
  {
    name: 'CODE_MODEL',
    flag: 'code-model',
    kind: 'id',
    default: 'qwen2.5-coder-1.5b',
    description: "base model id; the adapter's metadata base_model must equal it",
  },
  {
    name: 'BASE_MODEL_PATH',
    flag: 'base-model-path',
    kind: 'path',
    default: ({ settings }) =>
      join(settings.MODEL_MOUNT_PATH ?? DEFAULT_MODEL_ROOT, 'base', `${settings.CODE_MODEL ?? ''}.gguf`),
    defaultText: '<MODEL_MOUNT_PATH>/base/<CODE_MODEL>.gguf',
    description: 'base model GGUF',
  },
  {
    name: 'LLM_ENABLED',
    flag: 'llm-enabled',
    kind: 'boolean',
    default: 'true',
    description: 'false: start the app without any LLM',
  },
  {
    name: 'LLM_ENDPOINT',
    flag: 'llm-endpoint',
    kind: 'url',
    default: 'auto',
    defaultText: 'auto (the embedded server)',
    description:
      'an http(s) URL: use that llama.cpp server instead of starting one ("auto" or empty: embedded)',
  },
  {
    name: 'LLM_API_KEY',
    flag: 'llm-api-key',
    kind: 'text',
    default: '',
    defaultText: 'none',
    secret: true,
    description:
      'the key the LLM requires: the embedded llama-server is started with it (LLAMA_API_KEY), run sends it to a remote LLM_ENDPOINT (Authorization: Bearer), and the app gets it as LLM_API_KEY. A secret: never printed or recorded (prefer the variable: a flag shows in ps)',
  },
  {
    name: 'LLM_HOST',
    flag: 'llm-host',
    kind: 'host',
    default: '127.0.0.1',
    description: 'embedded server bind address (the image sets 0.0.0.0)',
  },
  {
    name: 'LLM_PORT',
    flag: 'llm-port',
    kind: 'port',
    default: '8081',
    description: "embedded server port (the gateway's, when it serves several adapters)",
  },
  {
    name: 'GATEWAY_MAX_BODY',
    flag: 'gateway-max-body',
    kind: 'count',
    default: '8388608',
    defaultText: '8388608 (8 MiB)',
    min: 1024,
    max: 1_073_741_824,
    unit: 'bytes',
    description: 'largest request body the gateway accepts (bytes); a larger one gets 413',
  },
  {
    name: 'GATEWAY_HEADERS_TIMEOUT',
    flag: 'gateway-headers-timeout',
    kind: 'seconds',
    default: '30',
    min: 0,
    above: true,
    max: 3600,
    description:
      'seconds a client may take to send its request headers, and its whole body, to the gateway (a slower one is cut off: 408)',
  },
  {
    name: 'GATEWAY_IDLE_TIMEOUT',
    flag: 'gateway-idle-timeout',
    kind: 'seconds',
    default: '600',
    min: 0,
    above: true,
    max: 86_400,
    description:
      'seconds a gateway connection may stay silent both ways (no request byte in, no answer byte out) before it is closed; keep-alive connections between requests close after 5 s',
  },
  {
    name: 'LLAMA_CPP_THREADS',
    flag: 'llama-cpp-threads',
    kind: 'count',
    default: '4',
    min: 1,
    max: 1024,
    unit: 'threads',
    description: 'inference threads (-t)',
  },
  {
    name: 'LLAMA_SERVER_BIN',
    flag: 'llama-server-bin',
    kind: 'program',
    default: 'llama-server',
    defaultText: 'llama-server on PATH',
    description: 'the llama.cpp server binary (a name looked up on PATH, or a path)',
  },
  {
    name: 'APP_COMMAND',
    flag: 'app-command',
    kind: 'command',
    default: DEFAULT_APP_COMMAND,
    description:
      'started once the LLM is healthy; "none" disables it. Plain words are executed directly, anything with shell syntax through /bin/sh -c',
  },
  {
    name: 'APP_HEALTH_URL',
    flag: 'app-health-url',
    kind: 'probe',
    default: 'none',
    description:
      "the app's health URL: polled and logged (never fatal), and checked by the image's HEALTHCHECK; under AIRGAP it must be loopback or allow-listed, like LLM_ENDPOINT",
  },
  {
    name: 'AIRGAP',
    flag: 'airgap',
    kind: 'airgap',
    default: 'true',
    description:
      'true: LLM_ENDPOINT and APP_HEALTH_URL must be loopback or allow-listed, the children get a proxy that refuses, and run warns when the network lets anything out (a proxy is no firewall: see the reference); strict: run also refuses to start then (exit 3); false: none of it',
  },
  {
    name: 'AIRGAP_ALLOWLIST',
    flag: 'airgap-allowlist',
    kind: 'hosts',
    default: '',
    defaultText: 'empty',
    description:
      'comma-separated hosts allowed under AIRGAP, each with its subdomains (as NO_PROXY matches them), IP addresses and address blocks (10.0.0.0/24); no ports',
  },
  {
    name: 'CODI_STATE_DIR',
    flag: 'codi-state-dir',
    kind: 'path',
    default: '/tmp/codi-adapter',
    description: "where environment.json is written and the base model's sha256 is cached",
  },
  {
    name: 'PATTERNS_RULES',
    flag: 'patterns-rules',
    kind: 'path',
    default: '/work/patterns/rules.yml',
    description: 'rules file whose top-level version is recorded as the ruleset version (optional)',
  },
  {
    name: 'LLM_READY_TIMEOUT',
    flag: 'llm-ready-timeout',
    kind: 'seconds',
    default: '120',
    min: 0,
    above: true,
    max: 86_400,
    description: 'seconds the embedded server may take to answer GET /health 200',
  },
  {
    name: 'LLM_HEALTH_RETRIES',
    flag: 'llm-health-retries',
    kind: 'count',
    default: '10',
    min: 1,
    max: 10_000,
    unit: 'attempts',
    description:
      'GET /health attempts (1 s apart) for a remote LLM_ENDPOINT; also the consecutive failed checks after which the embedded server counts as unhealthy',
  },
  {
    name: 'LLM_HEALTH_INTERVAL',
    flag: 'llm-health-interval',
    kind: 'seconds',
    default: '10',
    min: 0,
    max: 86_400,
    description: 'seconds between health checks while running (0: no checks)',
  },
  {
    name: 'STOP_GRACE_PERIOD',
    flag: 'stop-grace-period',
    kind: 'seconds',
    default: '4',
    min: 0,
    above: true,
    max: 86_400,
    description:
      'seconds each child gets to exit after SIGTERM before SIGKILL (app first, then LLM; keep 2× below docker stop -t, 10 s)',
  },
  {
    name: 'DRAIN_TIMEOUT',
    flag: 'drain-timeout',
    kind: 'seconds',
    default: '60',
    min: 0,
    max: 86_400,
    description:
      'after a reload switched the gateway to the new llama-server, seconds the old one may take to finish its requests before it is stopped',
  },
  {
    name: 'CATALOG_POLL_INTERVAL',
    flag: 'catalog-poll-interval',
    kind: 'seconds',
    default: '0',
    min: 0,
    max: 86_400,
    description:
      'seconds between looks at the rules file and the catalog; a change reloads the served set as SIGHUP does (0: only SIGHUP and codi-adapter reload)',
  },
  {
    name: 'LLM_SLOW_TOKENS_PER_SECOND',
    flag: 'llm-slow-tokens-per-second',
    kind: 'count',
    default: '5',
    min: 0,
    max: 1_000_000,
    unit: 'tokens per second',
    description:
      'generation speed below which llama-server counts as slow (read from its own timing lines): run warns with the resolution; 0: never',
  },
] as const satisfies readonly SettingRow[];

export type Row = (typeof RUN_SETTINGS)[number];
export type SettingName = Row['name'];
export const SETTING_NAMES: readonly SettingName[] = RUN_SETTINGS.map((s) => s.name);
/** Every setting's value, typed by its kind. */
export type SettingValues = { [R in Row as R['name']]: KindValue[R['kind']] };

export interface AppCommand {
  /** as configured */
  text: string;
  /** what is spawned: the words, or `/bin/sh -c <text>` */
  argv: [string, ...string[]];
  /** true when the text needed a shell (pipes, `&&`, `$VAR`, redirections, globs, assignments…) */
  shell: boolean;
}

const BY_NAME = new Map<string, SettingRow>(RUN_SETTINGS.map((s) => [s.name, s]));

/** `LLM_PORT` → `llm-port` */
export function flagName(name: SettingName): string {
  return BY_NAME.get(name)?.flag ?? name;
}

/** The documented default of a setting. */
export function defaultText(row: SettingRow): string {
  return row.defaultText ?? (typeof row.default === 'string' ? row.default : '');
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

/** AIRGAP: a boolean, or `strict`. */
export function parseAirgap(value: string, label: string): AirgapMode {
  if (value.trim().toLowerCase() === 'strict') return 'strict';
  const v = value.trim().toLowerCase();
  if (TRUE.has(v)) return 'on';
  if (FALSE.has(v)) return 'off';
  throw settingError(
    `${label} must be true, false or strict, got ${JSON.stringify(value)}`,
    `use true (the guard), strict (refuse to start when the network lets anything out) or false for ${label}`,
    label,
  );
}

/** true/false/1/0/yes/no/on/off, any case; anything else is refused, naming where it came from. */
export function parseBoolean(value: string, label: string): boolean {
  const v = value.trim().toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw settingError(
    `${label} must be true or false, got ${JSON.stringify(value)}`,
    `use one of true/false, 1/0, yes/no, on/off for ${label}`,
    label,
  );
}

/** A malformed setting: a usage error (exit 2) naming it. */
export function settingError(message: string, hint: string, setting: string): CodiError {
  return new CodiError('CONFIG_INVALID', message, {
    exitCode: ExitCode.USAGE,
    hint,
    details: { setting },
  });
}
