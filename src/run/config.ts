/**
 * `run`'s configuration, read from its settings' rows (src/run/settings.ts): the flag wins over the
 * environment variable, and an empty value counts as unset (so `-e LLM_ENDPOINT=` in a compose file
 * means "auto", not "the empty URL"). Resolving is pure apart from one `stat` (the `adapters/active`
 * default): environment and flags in, a validated configuration out. Syntax errors are usage errors
 * (exit 2) naming the variable or flag that was wrong. What is printed or recorded of a setting
 * (`settings`) keeps secrets out: a secret setting is `***`, a URL's credentials and token-like query
 * values are redacted (src/redact.ts); the typed values keep what the connections need.
 */
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { REDACTED, redactText, redactUrl } from '../redact.js';
import { thousands } from '../text.js';
import {
  checkUrlsAllowed,
  parseAllowlist,
  proxyEnv,
  type AllowEntry,
  type GuardedUrl,
  type Resolver,
} from './airgap.js';
import {
  defaultText,
  parseAirgap,
  parseBoolean,
  RUN_SETTINGS,
  settingError as usage,
  type AppCommand,
  type KindValue,
  type SettingKind,
  type SettingName,
  type Row,
  type SettingRow,
  type SettingValues,
  type AirgapMode,
} from './settings.js';

export type SettingSource = 'flag' | 'env' | 'default';

export type LlmMode = 'embedded' | 'remote' | 'disabled';

export interface RunConfig {
  modelMountPath: string;
  adapterPath: string;
  /** ADAPTER_TRUST_KEYS: only an adapter signed by one of these keys is served; null: no policy */
  trustKeys: string | null;
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
  /** the key the LLM requires (LLM_API_KEY); a secret, never printed */
  llmApiKey: string | null;
  /** the guard is on (AIRGAP true or strict) */
  airgap: boolean;
  airgapMode: AirgapMode;
  airgapAllowlist: AllowEntry[];
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

export function resolveRunConfig(input: ResolveInput): RunConfig {
  const cwd = input.cwd ?? process.cwd();
  const isDirectory = input.isDirectory ?? defaultIsDirectory;
  const sources = {} as Record<SettingName, SettingSource>;
  const settings = {} as Record<SettingName, string>;
  const values = {} as Record<SettingName, unknown>;
  for (const row of RUN_SETTINGS) {
    const given = givenValue(row, input);
    sources[row.name] = given.source;
    const value =
      given.value ?? (typeof row.default === 'string' ? row.default : row.default({ settings, isDirectory }));
    const read = readSetting(row, value, given.label, cwd);
    values[row.name] = read.value;
    // a secret is recorded as set or not, never as itself
    settings[row.name] = isSecret(row) && read.text !== '' ? REDACTED : read.text;
  }
  return configOf(values as SettingValues, sources, settings);
}

function isSecret(row: SettingRow): boolean {
  return row.secret === true;
}

/** The flag's value, else the variable's (trimmed); an empty one counts as unset. */
function givenValue(
  row: Row,
  input: ResolveInput,
): { value: string | boolean | undefined; label: string; source: SettingSource } {
  const flag = input.flags?.[row.name];
  if (flag !== undefined && flag !== '') return { value: flag, label: `--${row.flag}`, source: 'flag' };
  const env = input.env[row.name];
  if (env !== undefined && env.trim() !== '') return { value: env.trim(), label: row.name, source: 'env' };
  return { value: undefined, label: row.name, source: 'default' };
}

/** A setting's value read and checked by its kind: the typed value, and the text that shows it. */
function readSetting(
  row: SettingRow,
  value: string | boolean,
  label: string,
  cwd: string,
): { value: KindValue[SettingKind]; text: string } {
  if (row.kind === 'boolean') {
    const b = typeof value === 'boolean' ? value : parseBoolean(value, label);
    return { value: b, text: String(b) };
  }
  if (row.kind === 'airgap') {
    const mode = typeof value === 'boolean' ? (value ? 'on' : 'off') : parseAirgap(value, label);
    return { value: mode, text: mode === 'on' ? 'true' : mode === 'off' ? 'false' : 'strict' };
  }
  const s = String(value);
  switch (row.kind) {
    case 'path': {
      const out = resolve(cwd, s);
      return { value: out, text: out };
    }
    case 'keys': {
      if (s.toLowerCase() === 'none') return { value: null, text: 'none' };
      const out = resolve(cwd, s);
      return { value: out, text: out };
    }
    case 'program': {
      // a name is looked up on PATH when run starts it; a path (it has a slash) is resolved like the others
      const out = s.includes('/') ? resolve(cwd, s) : s;
      return { value: out, text: out };
    }
    case 'id':
      if (s.includes('/') || s === '.' || s === '..') {
        throw usage(
          `${row.name} must be a model id, not a path: ${JSON.stringify(s)}`,
          'set BASE_MODEL_PATH to the GGUF file and CODE_MODEL to its id',
          row.name,
        );
      }
      return { value: s, text: s };
    case 'host':
      if (!/^[A-Za-z0-9.:_[\]-]+$/u.test(s)) {
        throw usage(
          `${label} must be an address or host name, got ${JSON.stringify(s)}`,
          'e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)',
          row.name,
        );
      }
      return { value: s, text: s };
    case 'command': {
      const app = s.toLowerCase() === 'none' ? null : parseAppCommand(s, label);
      return { value: app, text: app === null ? 'none' : redactText(s) };
    }
    case 'url':
    case 'probe': {
      // either word means "no URL"; it shows as the row's own word for it
      if (s.toLowerCase() === 'auto' || s.toLowerCase() === 'none') {
        return { value: null, text: String(row.default) };
      }
      const out = parseHttpUrl(s, label, row.name, row.kind === 'probe');
      return { value: out, text: redactUrl(out) };
    }
    case 'hosts': {
      const entries = parseAllowlist(s, row.name);
      return { value: entries, text: entries.map((e) => e.text).join(',') };
    }
    case 'text':
      return { value: s === '' ? null : s, text: s };
    case 'port':
    case 'count':
      return readInteger(row, s, label);
    case 'seconds':
      return readSeconds(row, s, label);
  }
}

function readInteger(row: SettingRow, s: string, label: string): { value: number; text: string } {
  const min = row.kind === 'port' ? 1 : (row.min ?? 0);
  const max = row.kind === 'port' ? 65_535 : (row.max ?? Number.MAX_SAFE_INTEGER);
  // the bound is named where there is one, so the message says what is allowed (threads: 1 to 1024)
  const what =
    row.kind === 'port'
      ? 'an integer port from 1 to 65535'
      : row.max !== undefined
        ? `a whole number of ${row.unit ?? 'units'} from ${min} to ${thousands(max)}`
        : `a whole number of ${row.unit ?? 'units'} ≥ ${min}`;
  const out = /^[0-9]+$/u.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(out) || out < min || out > max) {
    throw usage(
      `${label} must be ${what}, got ${JSON.stringify(s)}`,
      `set ${label} to ${what}, e.g. ${defaultText(row)}`,
      row.name,
    );
  }
  return { value: out, text: String(out) };
}

function readSeconds(row: SettingRow, given: string, label: string): { value: number; text: string } {
  const min = row.min ?? 0;
  const s = given.replace(/s$/u, '');
  const out = /^[0-9]+(\.[0-9]+)?$/u.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(out) || (row.above ? out <= min : out < min) || out > (row.max ?? Infinity)) {
    const upTo = row.max !== undefined ? `, at most ${thousands(row.max)}` : '';
    const what = `a number of seconds ${row.above ? '>' : '≥'} ${min}${upTo}`;
    throw usage(
      `${label} must be ${what}, got ${JSON.stringify(given)}`,
      `set ${label} to ${what}, e.g. ${defaultText(row)}`,
      row.name,
    );
  }
  return { value: Math.round(out * 1000), text: String(out) };
}

/** The typed configuration from the settings' values, with the rules that span settings. */
function configOf(
  v: SettingValues,
  sources: Record<SettingName, SettingSource>,
  settings: Record<SettingName, string>,
): RunConfig {
  const llmMode: LlmMode = !v.LLM_ENABLED ? 'disabled' : v.LLM_ENDPOINT !== null ? 'remote' : 'embedded';
  if (llmMode === 'disabled' && v.APP_COMMAND === null) {
    throw usage(
      'nothing to run: LLM_ENABLED is false and APP_COMMAND is none',
      'enable the LLM, or give the app to start in APP_COMMAND',
      'APP_COMMAND',
    );
  }
  return {
    modelMountPath: v.MODEL_MOUNT_PATH,
    adapterPath: v.ADAPTER_PATH,
    trustKeys: v.ADAPTER_TRUST_KEYS,
    codeModel: v.CODE_MODEL,
    baseModelPath: v.BASE_MODEL_PATH,
    llmEnabled: v.LLM_ENABLED,
    llmMode,
    llmEndpoint:
      llmMode === 'remote'
        ? v.LLM_ENDPOINT
        : llmMode === 'embedded'
          ? endpointFor(v.LLM_HOST, v.LLM_PORT)
          : null,
    llmHost: v.LLM_HOST,
    llmPort: v.LLM_PORT,
    threads: v.LLAMA_CPP_THREADS,
    llamaServerBin: v.LLAMA_SERVER_BIN,
    app: v.APP_COMMAND,
    appHealthUrl: v.APP_HEALTH_URL,
    llmApiKey: v.LLM_API_KEY,
    airgap: v.AIRGAP !== 'off',
    airgapMode: v.AIRGAP,
    airgapAllowlist: v.AIRGAP_ALLOWLIST,
    stateDir: v.CODI_STATE_DIR,
    patternsRules: v.PATTERNS_RULES,
    readyTimeoutMs: v.LLM_READY_TIMEOUT,
    healthRetries: v.LLM_HEALTH_RETRIES,
    healthIntervalMs: v.LLM_HEALTH_INTERVAL,
    slowTokensPerSecond: v.LLM_SLOW_TOKENS_PER_SECOND,
    stopGraceMs: v.STOP_GRACE_PERIOD,
    sources,
    settings,
  };
}

/**
 * An http(s) base URL, without a trailing slash (with `query`: a URL to GET, kept as given); `label`
 * names the setting in the error, which shows the value redacted.
 */
export function parseHttpUrl(value: string, label: string, setting: string = label, query = false): string {
  const shown = JSON.stringify(redactUrl(value));
  const example = query ? 'http://127.0.0.1:8000/healthz' : 'http://llm.internal.example.com:8081';
  let u: URL | null;
  try {
    u = new URL(value);
  } catch {
    u = null;
  }
  if (u === null || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '') {
    throw usage(`${label} must be an http(s) URL, got ${shown}`, `e.g. ${label}=${example}`, setting);
  }
  if (query) return u.href;
  if (u.search !== '' || u.hash !== '') {
    throw usage(
      `${label} must be a base URL without a query or fragment, got ${shown}`,
      `e.g. ${label}=${example}`,
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

/**
 * Under AIRGAP the URLs `run` is given must lead to loopback or an allow-listed host (exit 3, naming
 * the setting and the fix): a remote LLM_ENDPOINT, and APP_HEALTH_URL, which run and the HEALTHCHECK
 * probe.
 */
export async function checkAirgap(config: RunConfig, resolve?: Resolver): Promise<void> {
  if (!config.airgap) return;
  const urls: GuardedUrl[] = [];
  if (config.llmMode === 'remote' && config.llmEndpoint !== null) {
    urls.push({ setting: 'LLM_ENDPOINT', url: config.llmEndpoint });
  }
  if (config.appHealthUrl !== null && config.app !== null) {
    urls.push({ setting: 'APP_HEALTH_URL', url: config.appHealthUrl });
  }
  await checkUrlsAllowed(urls, config.airgapAllowlist, resolve);
}

/** The proxy guard for the children under AIRGAP (src/run/airgap.ts); nothing without it. */
export function airgapProxyEnv(config: RunConfig): Record<string, string> {
  return config.airgap ? proxyEnv(config.airgapAllowlist) : {};
}

const SHELL_SYNTAX = new Set(['|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', '#', '~', '\n']);

/**
 * First words only a shell understands: its reserved words and the built-ins that are no program
 * (`exec`, `cd`, `export`, …), and `time` (a reserved word in bash and ksh; dash runs time(1)). A
 * command starting with one runs through `/bin/sh -c`, exactly as the shell would run it.
 */
const SHELL_WORDS = new Set([
  '!',
  '.',
  ':',
  '[[',
  '{',
  'alias',
  'break',
  'case',
  'cd',
  'command',
  'continue',
  'eval',
  'exec',
  'exit',
  'export',
  'for',
  'function',
  'getopts',
  'hash',
  'if',
  'local',
  'read',
  'readonly',
  'return',
  'select',
  'set',
  'shift',
  'source',
  'time',
  'times',
  'trap',
  'type',
  'ulimit',
  'umask',
  'unalias',
  'unset',
  'until',
  'wait',
  'while',
]);

/**
 * Splits APP_COMMAND into words the way sh would for simple commands (quotes and backslashes), so a
 * plain command is exec'd directly and receives signals itself. Anything using shell syntax outside
 * quotes (pipes, `&&`, `$VAR`, redirections, globs, `VAR=x cmd`), or starting with a word only a
 * shell knows (`exec`, `cd`, `time`, …), runs through `/bin/sh -c` instead.
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
  if (shell || SHELL_WORDS.has(first)) return { text, argv: ['/bin/sh', '-c', text], shell: true };
  return { text, argv: [first, ...words.slice(1)], shell: false };
}

function defaultIsDirectory(path: string): boolean {
  try {
    return isAbsolute(path) && statSync(path).isDirectory();
  } catch {
    return false;
  }
}
