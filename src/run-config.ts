/**
 * `run`'s configuration (CONTRACT §7). Every setting is an environment variable and a flag named after
 * it in kebab case (`LLM_PORT` ↔ `--llm-port`); the flag wins, and an empty value counts as unset (so
 * `-e LLM_ENDPOINT=` in a compose file means "auto", not "the empty URL"). Resolving is pure apart from
 * one `stat` (the `adapters/active` default): environment and flags in, a validated configuration out.
 * Syntax errors are usage errors (exit 2) naming the variable or flag that was wrong.
 */
import { statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { CodiError, ExitCode } from './errors.js';

export const SETTING_NAMES = [
  'MODEL_MOUNT_PATH',
  'ADAPTER_PATH',
  'CODE_MODEL',
  'BASE_MODEL_PATH',
  'LLM_ENABLED',
  'LLM_ENDPOINT',
  'LLM_HOST',
  'LLM_PORT',
  'LLAMA_CPP_THREADS',
  'LLAMA_SERVER_BIN',
  'APP_COMMAND',
  'APP_HEALTH_URL',
  'AIRGAP',
  'AIRGAP_ALLOWLIST',
  'CODI_STATE_DIR',
  'PATTERNS_RULES',
  'LLM_READY_TIMEOUT',
  'LLM_HEALTH_RETRIES',
  'LLM_HEALTH_INTERVAL',
  'STOP_GRACE_PERIOD',
  'LLM_SLOW_TOKENS_PER_SECOND',
] as const;
export type SettingName = (typeof SETTING_NAMES)[number];

export type SettingKind = 'path' | 'text' | 'boolean' | 'port' | 'count' | 'seconds' | 'url' | 'list';

export interface SettingSpec {
  name: SettingName;
  kind: SettingKind;
  /** shown in --help and the README table */
  description: string;
  /** the default as documented (some depend on other settings and are computed) */
  defaultText: string;
}

/** The adapter the contract names as the default, below `<MODEL_MOUNT_PATH>/adapters/`. */
export const DEFAULT_ADAPTER_ID = 'qwen15b-lora-v0.1';
export const DEFAULT_APP_COMMAND = 'uvicorn api.server:app --host 0.0.0.0 --port 8000';
/**
 * Where `HTTP_PROXY` points under AIRGAP: the discard port on loopback, where nothing listens in practice,
 * so a proxy-honouring client fails at once with "connection refused" instead of reaching out. It is a
 * guard against accidents, not a firewall: inside a container whose unprivileged ports start at 0
 * (Docker's default since 20.10) a process of the container could listen there.
 */
export const AIRGAP_PROXY = 'http://127.0.0.1:9';
export const LOOPBACK_NO_PROXY = ['localhost', '127.0.0.1', '::1'];

export const RUN_SETTINGS: readonly SettingSpec[] = [
  { name: 'MODEL_MOUNT_PATH', kind: 'path', defaultText: '/models', description: 'models volume root' },
  {
    name: 'ADAPTER_PATH',
    kind: 'path',
    defaultText: `<MODEL_MOUNT_PATH>/adapters/active if it exists (mount --activate), else <MODEL_MOUNT_PATH>/adapters/${DEFAULT_ADAPTER_ID}`,
    description: 'adapter directory to serve',
  },
  {
    name: 'CODE_MODEL',
    kind: 'text',
    defaultText: 'qwen2.5-coder-1.5b',
    description: "base model id; the adapter's metadata base_model must equal it",
  },
  {
    name: 'BASE_MODEL_PATH',
    kind: 'path',
    defaultText: '<MODEL_MOUNT_PATH>/base/<CODE_MODEL>.gguf',
    description: 'base model GGUF',
  },
  {
    name: 'LLM_ENABLED',
    kind: 'boolean',
    defaultText: 'true',
    description: 'false: start the app without any LLM',
  },
  {
    name: 'LLM_ENDPOINT',
    kind: 'url',
    defaultText: 'auto (the embedded server)',
    description:
      'an http(s) URL: use that llama.cpp server instead of starting one ("auto" or empty: embedded)',
  },
  {
    name: 'LLM_HOST',
    kind: 'text',
    defaultText: '127.0.0.1',
    description: 'embedded server bind address (the image sets 0.0.0.0)',
  },
  { name: 'LLM_PORT', kind: 'port', defaultText: '8081', description: 'embedded server port' },
  { name: 'LLAMA_CPP_THREADS', kind: 'count', defaultText: '4', description: 'inference threads (-t)' },
  {
    name: 'LLAMA_SERVER_BIN',
    kind: 'text',
    defaultText: 'llama-server on PATH',
    description: 'the llama.cpp server binary (a name looked up on PATH, or a path)',
  },
  {
    name: 'APP_COMMAND',
    kind: 'text',
    defaultText: DEFAULT_APP_COMMAND,
    description:
      'started once the LLM is healthy; "none" disables it. Plain words are executed directly, anything with shell syntax through /bin/sh -c',
  },
  {
    name: 'APP_HEALTH_URL',
    kind: 'url',
    defaultText: 'none',
    description:
      "the app's health URL: polled and logged (never fatal), and checked by the image's HEALTHCHECK",
  },
  {
    name: 'AIRGAP',
    kind: 'boolean',
    defaultText: 'true',
    description:
      'outbound guard: a remote LLM_ENDPOINT must be loopback or allow-listed, and the children get a proxy that refuses',
  },
  {
    name: 'AIRGAP_ALLOWLIST',
    kind: 'list',
    defaultText: 'empty',
    description: 'comma-separated hosts allowed when air-gapped (".example.com" allows its subdomains)',
  },
  {
    name: 'CODI_STATE_DIR',
    kind: 'path',
    defaultText: '/tmp/codi-adapter',
    description: 'where environment.json is written',
  },
  {
    name: 'PATTERNS_RULES',
    kind: 'path',
    defaultText: '/work/patterns/rules.yml',
    description: 'rules file whose top-level version is recorded as the ruleset version (optional)',
  },
  {
    name: 'LLM_READY_TIMEOUT',
    kind: 'seconds',
    defaultText: '120',
    description: 'seconds the embedded server may take to answer GET /health 200',
  },
  {
    name: 'LLM_HEALTH_RETRIES',
    kind: 'count',
    defaultText: '10',
    description:
      'GET /health attempts (1 s apart) for a remote LLM_ENDPOINT; also the consecutive failed checks after which the embedded server counts as unhealthy',
  },
  {
    name: 'LLM_HEALTH_INTERVAL',
    kind: 'seconds',
    defaultText: '10',
    description: 'seconds between health checks while running (0: no checks)',
  },
  {
    name: 'STOP_GRACE_PERIOD',
    kind: 'seconds',
    defaultText: '4',
    description:
      'seconds each child gets to exit after SIGTERM before SIGKILL (app first, then LLM; keep 2× below docker stop -t, 10 s)',
  },
  {
    name: 'LLM_SLOW_TOKENS_PER_SECOND',
    kind: 'count',
    defaultText: '5',
    description:
      'generation speed below which llama-server counts as slow (read from its own timing lines): run warns with the resolution; 0: never',
  },
];

export type SettingSource = 'flag' | 'env' | 'default';

export type LlmMode = 'embedded' | 'remote' | 'disabled';

export interface AppCommand {
  /** as configured */
  text: string;
  /** what is spawned: the words, or `/bin/sh -c <text>` */
  argv: [string, ...string[]];
  /** true when the text needed a shell (pipes, `&&`, `$VAR`, redirections, globs, assignments…) */
  shell: boolean;
}

export interface RunConfig {
  modelMountPath: string;
  adapterPath: string;
  codeModel: string;
  baseModelPath: string;
  llmEnabled: boolean;
  llmMode: LlmMode;
  /** remote mode: the configured URL without a trailing slash; embedded: where the server will answer */
  llmEndpoint: string | null;
  llmHost: string;
  llmPort: number;
  threads: number;
  llamaServerBin: string;
  app: AppCommand | null;
  appHealthUrl: string | null;
  airgap: boolean;
  airgapAllowlist: string[];
  stateDir: string;
  patternsRules: string;
  readyTimeoutMs: number;
  healthRetries: number;
  healthIntervalMs: number;
  /** tokens per second below which generation is reported as slow (0: never) */
  slowTokensPerSecond: number;
  stopGraceMs: number;
  /** where each value came from */
  sources: Record<SettingName, SettingSource>;
  /** every setting, resolved, as text: printed at start and recorded in environment.json */
  settings: Record<SettingName, string>;
}

export type RunFlags = Partial<Record<SettingName, string | boolean | undefined>>;

export interface ResolveInput {
  env: Readonly<Record<string, string | undefined>>;
  /** flag values by setting name (the command maps `--llm-port` to `LLM_PORT`) */
  flags?: RunFlags;
  /** relative paths are resolved against it (default: the process's working directory) */
  cwd?: string;
  /** whether `path` is a directory; injectable for tests (default: fs.statSync) */
  isDirectory?: (path: string) => boolean;
}

/** `LLM_PORT` → `llm-port` */
export function flagName(name: SettingName): string {
  return name.toLowerCase().replace(/_/gu, '-');
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

export function resolveRunConfig(input: ResolveInput): RunConfig {
  const cwd = input.cwd ?? process.cwd();
  const isDirectory = input.isDirectory ?? defaultIsDirectory;
  const sources = {} as Record<SettingName, SettingSource>;
  const settings = {} as Record<SettingName, string>;

  /** The raw value, its source, and how to name it in an error. */
  const raw = (name: SettingName): { value: string | boolean | undefined; label: string } => {
    const flag = input.flags?.[name];
    if (flag !== undefined && flag !== '') {
      sources[name] = 'flag';
      return { value: flag, label: `--${flagName(name)}` };
    }
    const env = input.env[name];
    if (env !== undefined && env.trim() !== '') {
      sources[name] = 'env';
      return { value: env.trim(), label: name };
    }
    sources[name] = 'default';
    return { value: undefined, label: name };
  };
  const text = (name: SettingName, fallback: string): string => {
    const { value } = raw(name);
    const out = typeof value === 'string' ? value : fallback;
    settings[name] = out;
    return out;
  };
  const path = (name: SettingName, fallback: string): string => {
    const out = resolve(cwd, text(name, fallback));
    settings[name] = out;
    return out;
  };
  const bool = (name: SettingName, fallback: boolean): boolean => {
    const { value, label } = raw(name);
    let out = fallback;
    if (typeof value === 'boolean') out = value;
    else if (value !== undefined) out = parseBoolean(value, label);
    settings[name] = String(out);
    return out;
  };
  const integer = (name: SettingName, fallback: number, min: number, max: number, what: string): number => {
    const { value, label } = raw(name);
    let out = fallback;
    if (value !== undefined) {
      const s = String(value);
      out = /^[0-9]+$/u.test(s) ? Number(s) : NaN;
      if (!Number.isSafeInteger(out) || out < min || out > max) {
        throw usage(
          `${label} must be ${what}, got ${JSON.stringify(s)}`,
          `set ${label} to ${what}, e.g. ${fallback}`,
          name,
        );
      }
    }
    settings[name] = String(out);
    return out;
  };
  const seconds = (name: SettingName, fallback: number, allowZero: boolean): number => {
    const { value, label } = raw(name);
    let out = fallback;
    if (value !== undefined) {
      const s = String(value).replace(/s$/u, '');
      out = /^[0-9]+(\.[0-9]+)?$/u.test(s) ? Number(s) : NaN;
      if (!Number.isFinite(out) || (allowZero ? out < 0 : out <= 0) || out > 86_400) {
        const what = allowZero ? 'a number of seconds ≥ 0' : 'a number of seconds > 0';
        throw usage(
          `${label} must be ${what}, got ${JSON.stringify(String(value))}`,
          `set ${label} to ${what}, e.g. ${fallback}`,
          name,
        );
      }
    }
    settings[name] = String(out);
    return Math.round(out * 1000);
  };
  const url = (name: SettingName): string | null => {
    const { value, label } = raw(name);
    if (typeof value !== 'string' || value.toLowerCase() === 'auto' || value.toLowerCase() === 'none') {
      settings[name] = name === 'LLM_ENDPOINT' ? 'auto' : 'none';
      return null;
    }
    const out = parseHttpUrl(value, label, name);
    settings[name] = out;
    return out;
  };

  const modelMountPath = path('MODEL_MOUNT_PATH', '/models');
  // `mount --activate` points adapters/active at an id; serving it by default is what that is for
  const active = join(modelMountPath, 'adapters', 'active');
  const adapterPath = path(
    'ADAPTER_PATH',
    isDirectory(active) ? active : join(modelMountPath, 'adapters', DEFAULT_ADAPTER_ID),
  );
  const codeModel = text('CODE_MODEL', 'qwen2.5-coder-1.5b');
  if (codeModel.includes('/') || codeModel === '.' || codeModel === '..') {
    throw usage(
      `CODE_MODEL must be a model id, not a path: ${JSON.stringify(codeModel)}`,
      'set BASE_MODEL_PATH to the GGUF file and CODE_MODEL to its id',
      'CODE_MODEL',
    );
  }
  const baseModelPath = path('BASE_MODEL_PATH', join(modelMountPath, 'base', `${codeModel}.gguf`));
  const llmEnabled = bool('LLM_ENABLED', true);
  const remote = url('LLM_ENDPOINT');
  const llmHost = text('LLM_HOST', '127.0.0.1');
  if (!/^[A-Za-z0-9.:_[\]-]+$/u.test(llmHost)) {
    throw usage(
      `${sources.LLM_HOST === 'flag' ? '--llm-host' : 'LLM_HOST'} must be an address or host name, got ${JSON.stringify(llmHost)}`,
      'e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)',
      'LLM_HOST',
    );
  }
  const llmPort = integer('LLM_PORT', 8081, 1, 65535, 'an integer port from 1 to 65535');
  const threads = integer('LLAMA_CPP_THREADS', 4, 1, 1024, 'a whole number of threads ≥ 1');
  // a name is looked up on PATH when run starts it; a path (it has a slash) is resolved like the others
  const serverText = text('LLAMA_SERVER_BIN', 'llama-server');
  const llamaServerBin = serverText.includes('/') ? path('LLAMA_SERVER_BIN', 'llama-server') : serverText;
  const appText = text('APP_COMMAND', DEFAULT_APP_COMMAND);
  const app =
    appText.toLowerCase() === 'none'
      ? null
      : parseAppCommand(appText, sources.APP_COMMAND === 'flag' ? '--app-command' : 'APP_COMMAND');
  if (app === null) settings.APP_COMMAND = 'none';
  const appHealthUrl = url('APP_HEALTH_URL');
  const airgap = bool('AIRGAP', true);
  const allowText = text('AIRGAP_ALLOWLIST', '');
  const airgapAllowlist = allowText
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h !== '');
  settings.AIRGAP_ALLOWLIST = airgapAllowlist.join(',');
  for (const host of airgapAllowlist) {
    if (!/^\.?[a-z0-9_[\]:.-]+$/u.test(host)) {
      throw usage(
        `AIRGAP_ALLOWLIST entries must be host names or addresses, got ${JSON.stringify(host)}`,
        'e.g. AIRGAP_ALLOWLIST=llm.internal.example.com,10.0.0.5 (".example.com" allows its subdomains)',
        'AIRGAP_ALLOWLIST',
      );
    }
  }
  const stateDir = path('CODI_STATE_DIR', '/tmp/codi-adapter');
  const patternsRules = path('PATTERNS_RULES', '/work/patterns/rules.yml');
  const readyTimeoutMs = seconds('LLM_READY_TIMEOUT', 120, false);
  const healthRetries = integer('LLM_HEALTH_RETRIES', 10, 1, 10_000, 'a whole number of attempts ≥ 1');
  const healthIntervalMs = seconds('LLM_HEALTH_INTERVAL', 10, true);
  const stopGraceMs = seconds('STOP_GRACE_PERIOD', 4, false);
  const slowTokensPerSecond = integer(
    'LLM_SLOW_TOKENS_PER_SECOND',
    5,
    0,
    1_000_000,
    'a whole number of tokens per second ≥ 0',
  );

  const llmMode: LlmMode = !llmEnabled ? 'disabled' : remote !== null ? 'remote' : 'embedded';
  if (llmMode === 'disabled' && app === null) {
    throw usage(
      'nothing to run: LLM_ENABLED is false and APP_COMMAND is none',
      'enable the LLM, or give the app to start in APP_COMMAND',
      'APP_COMMAND',
    );
  }
  const llmEndpoint =
    llmMode === 'remote' ? remote : llmMode === 'embedded' ? endpointFor(llmHost, llmPort) : null;

  return {
    modelMountPath,
    adapterPath,
    codeModel,
    baseModelPath,
    llmEnabled,
    llmMode,
    llmEndpoint,
    llmHost,
    llmPort,
    threads,
    llamaServerBin,
    app,
    appHealthUrl,
    airgap,
    airgapAllowlist,
    stateDir,
    patternsRules,
    readyTimeoutMs,
    healthRetries,
    healthIntervalMs,
    slowTokensPerSecond,
    stopGraceMs,
    sources,
    settings,
  };
}

/** true/false/1/0/yes/no/on/off, any case; anything else is refused, naming where it came from. */
export function parseBoolean(value: string, label: string): boolean {
  const v = value.trim().toLowerCase();
  if (TRUE.has(v)) return true;
  if (FALSE.has(v)) return false;
  throw usage(
    `${label} must be true or false, got ${JSON.stringify(value)}`,
    `use one of true/false, 1/0, yes/no, on/off for ${label}`,
    label,
  );
}

/** An http(s) base URL, without a trailing slash; `label` names the setting in the error. */
export function parseHttpUrl(value: string, label: string, setting: string = label): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw usage(
      `${label} must be an http(s) URL, got ${JSON.stringify(value)}`,
      `e.g. ${label}=http://llm.internal.example.com:8081`,
      setting,
    );
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '') {
    throw usage(
      `${label} must be an http(s) URL, got ${JSON.stringify(value)}`,
      `e.g. ${label}=http://llm.internal.example.com:8081`,
      setting,
    );
  }
  if (u.search !== '' || u.hash !== '') {
    throw usage(
      `${label} must be a base URL without a query or fragment, got ${JSON.stringify(value)}`,
      `e.g. ${label}=http://llm.internal.example.com:8081`,
      setting,
    );
  }
  return u.href.replace(/\/+$/u, '');
}

/** Where clients reach a server bound to `host`: a wildcard bind is reached over loopback. */
export function endpointFor(host: string, port: number): string {
  const h = host.replace(/^\[|\]$/gu, '');
  if (h === '0.0.0.0' || h === '') return `http://127.0.0.1:${port}`;
  if (h === '::') return `http://[::1]:${port}`;
  return h.includes(':') ? `http://[${h}]:${port}` : `http://${h}:${port}`;
}

/** localhost, 127.0.0.0/8 and ::1: connections that never leave the machine. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/gu, '');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (/^::ffff:127\./u.test(h)) return true;
  return /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/u.test(h);
}

/** Exact host, or a `.suffix` entry matching its subdomains (the NO_PROXY convention). */
export function isAllowListed(hostname: string, allowlist: readonly string[]): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/gu, '');
  return allowlist.some((entry) => {
    const e = entry.replace(/^\[|\]$/gu, '');
    if (e.startsWith('.')) return h.endsWith(e) || h === e.slice(1);
    return h === e;
  });
}

/**
 * Under AIRGAP a remote endpoint must not leave the machine unless allow-listed (exit 3, naming both
 * variables, since either one is the fix).
 */
export function checkAirgap(config: RunConfig): void {
  if (!config.airgap || config.llmMode !== 'remote' || config.llmEndpoint === null) return;
  const host = new URL(config.llmEndpoint).hostname;
  if (isLoopbackHost(host) || isAllowListed(host, config.airgapAllowlist)) return;
  throw new CodiError(
    'AIRGAP_BLOCKED',
    `LLM_ENDPOINT ${config.llmEndpoint} is not loopback and ${host} is not in AIRGAP_ALLOWLIST (AIRGAP is on)`,
    {
      exitCode: ExitCode.ENVIRONMENT,
      hint: `add ${host} to AIRGAP_ALLOWLIST (comma-separated), or point LLM_ENDPOINT at an allowed host`,
      details: { LLM_ENDPOINT: config.llmEndpoint, AIRGAP_ALLOWLIST: config.airgapAllowlist },
    },
  );
}

/**
 * The proxy guard for the children under AIRGAP: clients that honour the proxy variables (requests,
 * httpx, urllib, curl, undici's EnvHttpProxyAgent) get "connection refused" for anything not in
 * NO_PROXY. It guards well-behaved clients only; a raw socket is not stopped by it.
 */
export function airgapProxyEnv(config: RunConfig): Record<string, string> {
  if (!config.airgap) return {};
  const noProxy = [...LOOPBACK_NO_PROXY, ...config.airgapAllowlist].join(',');
  return {
    HTTP_PROXY: AIRGAP_PROXY,
    HTTPS_PROXY: AIRGAP_PROXY,
    http_proxy: AIRGAP_PROXY,
    https_proxy: AIRGAP_PROXY,
    ALL_PROXY: AIRGAP_PROXY,
    all_proxy: AIRGAP_PROXY,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
  };
}

const SHELL_SYNTAX = new Set(['|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', '#', '~', '\n']);

/**
 * Splits APP_COMMAND into words the way sh would for simple commands (quotes and backslashes), so a
 * plain command is exec'd directly and receives signals itself. Anything using shell syntax outside
 * quotes (pipes, `&&`, `$VAR`, redirections, globs, `VAR=x cmd`) runs through `/bin/sh -c` instead.
 */
export function parseAppCommand(text: string, label = 'APP_COMMAND'): AppCommand {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let shell = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] ?? '';
    if (c === ' ' || c === '\t') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
      continue;
    }
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw usage(`${label} has an unterminated ' quote: ${text}`, 'close the quote', label);
      word += text.slice(i + 1, end);
      inWord = true;
      i = end;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      for (; j < text.length; j++) {
        const d = text[j] ?? '';
        if (d === '"') break;
        if (d === '$' || d === '`') shell = true;
        if (d === '\\' && j + 1 < text.length && '"\\$`\n'.includes(text[j + 1] ?? '')) {
          word += text[j + 1] ?? '';
          j++;
          continue;
        }
        word += d;
      }
      if (j >= text.length)
        throw usage(`${label} has an unterminated " quote: ${text}`, 'close the quote', label);
      inWord = true;
      i = j;
      continue;
    }
    if (c === '\\') {
      if (i + 1 < text.length) word += text[i + 1] ?? '';
      i++;
      inWord = true;
      continue;
    }
    if (SHELL_SYNTAX.has(c) && !(c === '#' && inWord) && !(c === '~' && inWord)) shell = true;
    if (c === '=' && words.length === 0 && /^[A-Za-z_][A-Za-z0-9_]*$/u.test(word)) shell = true;
    word += c;
    inWord = true;
  }
  if (inWord) words.push(word);
  const first = words[0];
  if (first === undefined || first === '') {
    throw usage(`${label} is empty`, `give the command to start, or ${label}=none for no app`, label);
  }
  if (shell) return { text, argv: ['/bin/sh', '-c', text], shell: true };
  return { text, argv: [first, ...words.slice(1)], shell: false };
}

function usage(message: string, hint: string, setting: string): CodiError {
  return new CodiError('CONFIG_INVALID', message, {
    exitCode: ExitCode.USAGE,
    hint,
    details: { setting },
  });
}

function defaultIsDirectory(path: string): boolean {
  try {
    return isAbsolute(path) && statSync(path).isDirectory();
  } catch {
    return false;
  }
}
