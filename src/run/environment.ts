/**
 * `environment.json` in CODI_STATE_DIR: what `run` is serving and how it was configured, written
 * atomically once the LLM is ready and before the app starts (the app and a HEALTHCHECK read it).
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic.js';
import type { Finding } from '../findings.js';
import { airgapProxyEnv, type LlmMode, type RunConfig } from './config.js';
import { routeText } from './egress.js';
import type { AirgapMode } from './settings.js';
import type { SettingName } from './settings.js';
import { redactText, redactUrl } from '../redact.js';
import { VERSION } from '../version.js';
import type { RunContext } from './context.js';
import type { LoraAdapterInfo } from './llama-server.js';
import { describeErrno } from './paths.js';
import type { NotServed } from '../gateway/served-set.js';
import type { ServedAdapter } from '../gateway/serving.js';
import { prepareStateDir } from './state-dir.js';

export const ENVIRONMENT_FILE = 'environment.json';

export interface AdapterRecord {
  id: string | null;
  version: string | null;
  base_model: string | null;
  path: string;
  /** the weights file, `sha256:<hex>` as metadata.json writes it */
  checksum: string;
  checksum_verified: boolean;
  checksums: { file: string; ok: boolean }[];
  /** the fingerprint of the trusted key that signed it (ADAPTER_TRUST_KEYS); null without a policy */
  signed_by: string | null;
  gguf: string;
  gguf_cached: boolean;
  /** how the GGUF is known to be the adapter's conversion: compared byte for byte, or written now */
  gguf_proof: 'compared' | 'written';
  /** what was found on the way (GGUF_CACHE_TAMPERED: a cache entry that was not this conversion) */
  findings: Pick<Finding, 'level' | 'code' | 'message'>[];
}

export interface LlamaServerRecord {
  path: string;
  version: string;
  build: number | null;
  commit: string | null;
}

export interface EnvironmentRecord {
  schema_version: 1;
  written_at: string;
  codi_adapter: { version: string; pid: number };
  adapter: AdapterRecord | null;
  ruleset: { path: string; version: string | null; error?: string };
  base_model: { id: string; path: string | null };
  llm: {
    enabled: boolean;
    mode: LlmMode;
    endpoint: string | null;
    pid: number | null;
    llama_server: LlamaServerRecord | null;
    lora_adapters: LoraAdapterInfo[] | null;
    healthy_after_ms: number | null;
  };
  app: { command: string | null; argv: string[] | null; shell: boolean };
  airgap: {
    enabled: boolean;
    mode: AirgapMode;
    /** true: no route leads beyond loopback and the allowlist; null: it cannot be told (no /proc) */
    enforced: boolean | null;
    default_route: boolean;
    /** the routes beyond loopback, as `ip route` shows them (`10.0.0.0/24 dev eth0`) */
    routes: string[];
    /** those of them that lead beyond the allowlist */
    outside: string[];
    allowlist: string[];
    proxy: string | null;
    no_proxy: string | null;
  };
  settings: Record<SettingName, string>;
  /** the gateway and its served set (one adapter included); null when the LLM is remote or off */
  gateway: GatewayRecord | null;
}

/** What the LLM step found out, for the record (all null without an LLM). */
export interface LlmReady {
  adapter: AdapterRecord | null;
  llamaServer: LlamaServerRecord | null;
  lora: LoraAdapterInfo[] | null;
  healthyMs: number | null;
  /** the served set behind the gateway (every embedded LLM) */
  gateway?: GatewayRecord;
}

/** The served set behind the gateway, and the adapters left out. */
export interface GatewayRecord {
  /** llama-server on loopback */
  upstream: string;
  default: string | null;
  max_adapters: number;
  served: (ServedAdapter & { record: AdapterRecord | null })[];
  not_served: NotServed[];
}

export function environmentFile(config: RunConfig): string {
  return join(config.stateDir, ENVIRONMENT_FILE);
}

/** A file from an earlier run must not make a HEALTHCHECK or the app believe we are up. */
export async function removeEnvironment(config: RunConfig): Promise<void> {
  await rm(environmentFile(config), { force: true }).catch(() => undefined);
}

/** Records the environment (LLM_ENDPOINT included) in CODI_STATE_DIR; resolves to what it wrote. */
export async function writeEnvironment(ctx: RunContext, llm: LlmReady): Promise<EnvironmentRecord> {
  const { config, report } = ctx;
  const ruleset = await readRulesetVersion(config.patternsRules);
  if (ruleset.error) report.warn(`ruleset version not recorded: ${ruleset.error}`);
  const record = environmentRecord(ctx, llm, ruleset);
  // checked when run started; checked again in case it went away while the model loaded
  await prepareStateDir(config.stateDir);
  const file = environmentFile(config);
  // 0600: only run's user (the app, the HEALTHCHECK) reads what is served and how
  await writeFileAtomic(file, `${JSON.stringify(record, null, 2)}\n`, 0o600);
  if (config.llmEndpoint !== null) report.info(`LLM_ENDPOINT=${redactUrl(config.llmEndpoint)}`);
  report.info(`environment recorded in ${file}`);
  return record;
}

function environmentRecord(
  ctx: RunContext,
  llm: LlmReady,
  ruleset: EnvironmentRecord['ruleset'],
): EnvironmentRecord {
  const { config } = ctx;
  const proxy = airgapProxyEnv(config);
  return {
    schema_version: 1,
    written_at: new Date().toISOString(),
    codi_adapter: { version: VERSION, pid: process.pid },
    adapter: llm.adapter,
    ruleset,
    base_model: { id: config.codeModel, path: config.llmMode === 'embedded' ? config.baseModelPath : null },
    llm: {
      enabled: config.llmEnabled,
      mode: config.llmMode,
      endpoint: config.llmEndpoint === null ? null : redactUrl(config.llmEndpoint),
      pid: ctx.children.llm?.pid ?? null,
      llama_server: llm.llamaServer,
      lora_adapters: llm.lora,
      healthy_after_ms: llm.healthyMs,
    },
    app: {
      command: config.app ? redactText(config.app.text) : null,
      argv: config.app ? config.app.argv.map(redactText) : null,
      shell: config.app?.shell ?? false,
    },
    airgap: {
      enabled: config.airgap,
      mode: config.airgapMode,
      enforced: ctx.egress.known ? ctx.egress.outside.length === 0 : null,
      default_route: ctx.egress.defaultRoute,
      routes: ctx.egress.routes.map(routeText),
      outside: ctx.egress.outside.map(routeText),
      allowlist: config.airgapAllowlist.map((e) => e.text),
      proxy: proxy.HTTP_PROXY ?? null,
      no_proxy: proxy.NO_PROXY ?? null,
    },
    settings: config.settings,
    gateway: llm.gateway ?? null,
  };
}

/** The ruleset version: the rules file's top-level `version`, if the file is there. */
export async function readRulesetVersion(path: string): Promise<EnvironmentRecord['ruleset']> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT' || errno === 'ENOTDIR') return { path, version: null };
    return { path, version: null, error: `${path}: ${describeErrno(e as NodeJS.ErrnoException)}` };
  }
  try {
    // loaded here, after the LLM is up: the YAML parser is a noticeable part of start-up otherwise
    const { isMap, isScalar, parseDocument } = await import('yaml');
    const doc = parseDocument(text);
    const first = doc.errors[0];
    if (first) throw first;
    const node = isMap(doc.contents) ? doc.contents.get('version', true) : undefined;
    if (isScalar(node) && typeof node.value === 'string') return { path, version: node.value };
    // a number as written, as promote records it (`version: 2026.10` is "2026.10", not 2026.1)
    if (isScalar(node) && typeof node.value === 'number') {
      return { path, version: node.source ?? String(node.value) };
    }
    return { path, version: null, error: `${path} has no top-level version` };
  } catch (e) {
    return {
      path,
      version: null,
      error: `${path} is not valid YAML: ${(e as Error).message.split('\n')[0] ?? ''}`,
    };
  }
}
