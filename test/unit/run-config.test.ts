import { describe, expect, it } from 'vitest';
import { CodiError, ExitCode } from '../../src/errors.js';
import {
  AIRGAP_PROXY,
  airgapProxyEnv,
  checkAirgap,
  endpointFor,
  isAllowListed,
  isLoopbackHost,
  parseAppCommand,
  resolveRunConfig,
  type ResolveInput,
  type RunConfig,
} from '../../src/run/config.js';
import { flagName, RUN_SETTINGS, SETTING_NAMES } from '../../src/run/settings.js';
import { thrown } from '../helpers/errors.js';

const noActive = (): boolean => false;

function resolve(env: Record<string, string | undefined> = {}, rest: Partial<ResolveInput> = {}): RunConfig {
  return resolveRunConfig({ env, cwd: '/work', isDirectory: noActive, ...rest });
}

function usageError(fn: () => unknown): CodiError {
  const err = thrown(fn);
  expect(err.exitCode).toBe(ExitCode.USAGE);
  expect(err.code).toBe('CONFIG_INVALID');
  return err;
}

describe('resolveRunConfig defaults', () => {
  it('matches the documented defaults', () => {
    const c = resolve();
    expect(c.modelMountPath).toBe('/models');
    expect(c.adapterPath).toBe('/models/adapters/qwen15b-lora-v0.1');
    expect(c.codeModel).toBe('qwen2.5-coder-1.5b');
    expect(c.baseModelPath).toBe('/models/base/qwen2.5-coder-1.5b.gguf');
    expect(c.llmEnabled).toBe(true);
    expect(c.llmMode).toBe('embedded');
    expect(c.llmEndpoint).toBe('http://127.0.0.1:8081');
    expect(c.llmHost).toBe('127.0.0.1');
    expect(c.llmPort).toBe(8081);
    expect(c.threads).toBe(4);
    expect(c.llamaServerBin).toBe('llama-server');
    expect(c.app).toEqual({
      text: 'uvicorn api.server:app --host 0.0.0.0 --port 8000',
      argv: ['uvicorn', 'api.server:app', '--host', '0.0.0.0', '--port', '8000'],
      shell: false,
    });
    expect(c.airgap).toBe(true);
    expect(c.airgapAllowlist).toEqual([]);
    expect(c.stateDir).toBe('/tmp/codi-adapter');
    expect(c.patternsRules).toBe('/work/patterns/rules.yml');
    expect(c.readyTimeoutMs).toBe(120_000);
    expect(c.healthRetries).toBe(10);
    expect(c.healthIntervalMs).toBe(10_000);
    expect(c.stopGraceMs).toBe(4000);
    expect(Object.values(c.sources).every((s) => s === 'default')).toBe(true);
  });

  it('records every setting, as text', () => {
    const c = resolve();
    expect(Object.keys(c.settings).sort()).toEqual([...SETTING_NAMES].sort());
    expect(c.settings.LLM_ENDPOINT).toBe('auto');
    expect(c.settings.APP_HEALTH_URL).toBe('none');
    expect(RUN_SETTINGS.map((s) => s.name)).toEqual([...SETTING_NAMES]);
  });

  it('derives the adapter and base model paths from MODEL_MOUNT_PATH and CODE_MODEL', () => {
    const c = resolve({ MODEL_MOUNT_PATH: '/srv/models', CODE_MODEL: 'tiny-qwen2' });
    expect(c.adapterPath).toBe('/srv/models/adapters/qwen15b-lora-v0.1');
    expect(c.baseModelPath).toBe('/srv/models/base/tiny-qwen2.gguf');
  });

  it('serves <MODEL_MOUNT_PATH>/adapters/active by default when it exists', () => {
    const c = resolve({}, { isDirectory: (p) => p === '/models/adapters/active' });
    expect(c.adapterPath).toBe('/models/adapters/active');
    expect(resolve({ ADAPTER_PATH: '/x' }, { isDirectory: () => true }).adapterPath).toBe('/x');
  });

  it('resolves relative paths against the working directory', () => {
    const c = resolve({
      MODEL_MOUNT_PATH: 'models',
      ADAPTER_PATH: './models/adapters/a',
      BASE_MODEL_PATH: '../base.gguf',
      CODI_STATE_DIR: 'state',
      PATTERNS_RULES: 'patterns/rules.yml',
    });
    expect(c.modelMountPath).toBe('/work/models');
    expect(c.adapterPath).toBe('/work/models/adapters/a');
    expect(c.baseModelPath).toBe('/base.gguf');
    expect(c.stateDir).toBe('/work/state');
    expect(c.patternsRules).toBe('/work/patterns/rules.yml');
    expect(c.settings.MODEL_MOUNT_PATH).toBe('/work/models');
  });

  it('resolves LLAMA_SERVER_BIN when it is a path, and keeps a bare name for the PATH lookup', () => {
    const relative = resolve({ LLAMA_SERVER_BIN: 'build/bin/llama-server' });
    expect(relative.llamaServerBin).toBe('/work/build/bin/llama-server');
    expect(relative.settings.LLAMA_SERVER_BIN).toBe('/work/build/bin/llama-server');
    expect(resolve({ LLAMA_SERVER_BIN: 'llama-server' }).llamaServerBin).toBe('llama-server');
    expect(resolve({}).llamaServerBin).toBe('llama-server');
  });

  it('lets a flag win over the environment, and treats empty values as unset', () => {
    const c = resolve(
      { LLM_PORT: '9000', LLM_HOST: '', LLAMA_CPP_THREADS: ' ' },
      { flags: { LLM_PORT: '9100', AIRGAP: false } },
    );
    expect(c.llmPort).toBe(9100);
    expect(c.sources.LLM_PORT).toBe('flag');
    expect(c.llmHost).toBe('127.0.0.1');
    expect(c.sources.LLM_HOST).toBe('default');
    expect(c.threads).toBe(4);
    expect(c.airgap).toBe(false);
    expect(c.sources.AIRGAP).toBe('flag');
  });

  it('maps every setting to a kebab-case flag', () => {
    expect(flagName('LLM_PORT')).toBe('llm-port');
    expect(flagName('LLAMA_CPP_THREADS')).toBe('llama-cpp-threads');
  });
});

describe('resolveRunConfig refuses bad input with exit 2, naming the setting', () => {
  it.each([['0'], ['65536'], ['80a'], ['-1'], ['8081.5'], [' 8 0'], ['0x50']])('LLM_PORT=%j', (port) => {
    const err = usageError(() => resolve({ LLM_PORT: port }));
    expect(err.message).toContain('LLM_PORT must be an integer port from 1 to 65535');
  });

  it('names the flag when the flag was wrong', () => {
    const err = usageError(() => resolve({}, { flags: { LLM_PORT: 'abc' } }));
    expect(err.message).toMatch(/^--llm-port must be/u);
  });

  it.each([['2.5'], ['0'], ['four'], ['-2'], ['1e3']])('LLAMA_CPP_THREADS=%j', (threads) => {
    const err = usageError(() => resolve({ LLAMA_CPP_THREADS: threads }));
    expect(err.message).toContain('LLAMA_CPP_THREADS must be a whole number of threads');
  });

  it.each([['LLM_ENABLED'], ['AIRGAP']])('%s spelled in an unknown way', (name) => {
    for (const bad of ['maybe', 'tru', 'enabled', '2', 'y']) {
      const err = usageError(() => resolve({ [name]: bad }));
      expect(err.message).toBe(`${name} must be true or false, got ${JSON.stringify(bad)}`);
      expect(err.hint).toContain('true/false, 1/0, yes/no, on/off');
    }
  });

  it('accepts booleans as true/false/1/0/yes/no/on/off in any case', () => {
    for (const t of ['true', 'TRUE', '1', 'yes', 'On']) expect(resolve({ AIRGAP: t }).airgap).toBe(true);
    for (const f of ['false', 'False', '0', 'NO', 'off']) expect(resolve({ AIRGAP: f }).airgap).toBe(false);
  });

  it.each([
    ['llm.internal:8081'],
    ['ftp://host/'],
    ['http://'],
    ['not a url'],
    ['http://host:8081/?a=1'],
    ['file:///x'],
  ])('LLM_ENDPOINT=%j', (url) => {
    const err = usageError(() => resolve({ LLM_ENDPOINT: url }));
    expect(err.message).toMatch(/^LLM_ENDPOINT must be (an http\(s\) URL|a base URL)/u);
  });

  it('refuses a malformed APP_HEALTH_URL too', () => {
    expect(usageError(() => resolve({ APP_HEALTH_URL: 'localhost:8000/healthz' })).message).toMatch(
      /^APP_HEALTH_URL must be an http\(s\) URL/u,
    );
  });

  it.each([
    ['LLM_READY_TIMEOUT', '0'],
    ['LLM_READY_TIMEOUT', 'soon'],
    ['LLM_READY_TIMEOUT', '-5'],
    ['STOP_GRACE_PERIOD', '0'],
    ['LLM_HEALTH_INTERVAL', '-1'],
    ['LLM_HEALTH_RETRIES', '0'],
    ['LLM_HEALTH_RETRIES', '1.5'],
  ])('%s=%j', (name, value) => {
    expect(usageError(() => resolve({ [name]: value })).message).toMatch(new RegExp(`^${name} must be`, 'u'));
  });

  it('accepts seconds with decimals and an s suffix; 0 disables the health interval', () => {
    const c = resolve({ LLM_READY_TIMEOUT: '2.5', STOP_GRACE_PERIOD: '1s', LLM_HEALTH_INTERVAL: '0' });
    expect(c.readyTimeoutMs).toBe(2500);
    expect(c.stopGraceMs).toBe(1000);
    expect(c.healthIntervalMs).toBe(0);
  });

  it('refuses a host with spaces or a path for a model id', () => {
    expect(usageError(() => resolve({ LLM_HOST: 'local host' })).message).toMatch(/^LLM_HOST must be/u);
    expect(usageError(() => resolve({ CODE_MODEL: '../x' })).message).toMatch(
      /^CODE_MODEL must be a model id/u,
    );
  });

  it('refuses an allowlist entry that is not a host', () => {
    expect(usageError(() => resolve({ AIRGAP_ALLOWLIST: 'good.example.com, http://bad/' })).message).toMatch(
      /^AIRGAP_ALLOWLIST entries must be host names/u,
    );
  });

  it('refuses to run nothing at all', () => {
    const err = usageError(() => resolve({ LLM_ENABLED: 'false', APP_COMMAND: 'none' }));
    expect(err.message).toContain('nothing to run');
  });
});

describe('modes', () => {
  it('remote: LLM_ENDPOINT without a trailing slash', () => {
    const c = resolve({ LLM_ENDPOINT: 'http://LLM.internal.example.com:8081/' });
    expect(c.llmMode).toBe('remote');
    expect(c.llmEndpoint).toBe('http://llm.internal.example.com:8081');
  });

  it('"auto" or empty LLM_ENDPOINT means embedded', () => {
    expect(resolve({ LLM_ENDPOINT: 'auto' }).llmMode).toBe('embedded');
    expect(resolve({ LLM_ENDPOINT: '' }).llmMode).toBe('embedded');
  });

  it('disabled: no endpoint at all', () => {
    const c = resolve({ LLM_ENABLED: 'false', LLM_ENDPOINT: 'http://127.0.0.1:1' });
    expect(c.llmMode).toBe('disabled');
    expect(c.llmEndpoint).toBeNull();
  });

  it('APP_COMMAND=none (any case) disables the app', () => {
    expect(resolve({ APP_COMMAND: 'None' }).app).toBeNull();
    expect(resolve({ APP_COMMAND: 'none' }).settings.APP_COMMAND).toBe('none');
  });

  it('a wildcard bind is reached over loopback', () => {
    expect(endpointFor('0.0.0.0', 8081)).toBe('http://127.0.0.1:8081');
    expect(endpointFor('::', 8081)).toBe('http://[::1]:8081');
    expect(endpointFor('[::1]', 8081)).toBe('http://[::1]:8081');
    expect(endpointFor('10.1.2.3', 80)).toBe('http://10.1.2.3:80');
  });
});

describe('air gap', () => {
  it('knows loopback hosts', () => {
    for (const h of ['localhost', 'LOCALHOST', 'api.localhost', '127.0.0.1', '127.1.2.3', '[::1]', '::1']) {
      expect(isLoopbackHost(h), h).toBe(true);
    }
    for (const h of ['0.0.0.0', '10.0.0.1', 'localhost.example.com', '128.0.0.1', '::', 'example.com']) {
      expect(isLoopbackHost(h), h).toBe(false);
    }
  });

  it('matches exact hosts and .suffix entries', () => {
    expect(isAllowListed('llm.internal.example.com', ['llm.internal.example.com'])).toBe(true);
    expect(isAllowListed('LLM.internal.example.com', ['llm.internal.example.com'])).toBe(true);
    expect(isAllowListed('a.internal.example.com', ['.internal.example.com'])).toBe(true);
    expect(isAllowListed('internal.example.com', ['.internal.example.com'])).toBe(true);
    expect(isAllowListed('evilinternal.example.com', ['.internal.example.com'])).toBe(false);
    expect(isAllowListed('llm.internal.example.com.evil.io', ['llm.internal.example.com'])).toBe(false);
  });

  it('refuses a remote endpoint that is neither loopback nor allow-listed, naming both variables (exit 3)', () => {
    const c = resolve({ LLM_ENDPOINT: 'http://llm.internal.example.com:8081' });
    let err: unknown;
    try {
      checkAirgap(c);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CodiError);
    expect((err as CodiError).exitCode).toBe(ExitCode.ENVIRONMENT);
    expect((err as CodiError).code).toBe('AIRGAP_BLOCKED');
    expect((err as CodiError).message).toMatch(/LLM_ENDPOINT .* AIRGAP_ALLOWLIST/u);
  });

  it('allows loopback, allow-listed hosts, and anything with AIRGAP=false', () => {
    expect(() => {
      checkAirgap(resolve({ LLM_ENDPOINT: 'http://localhost:8081' }));
    }).not.toThrow();
    expect(() => {
      checkAirgap(resolve({ LLM_ENDPOINT: 'http://llm.x.com:8081', AIRGAP_ALLOWLIST: 'other, llm.x.com' }));
    }).not.toThrow();
    expect(() => {
      checkAirgap(resolve({ LLM_ENDPOINT: 'http://llm.x.com:8081', AIRGAP: 'false' }));
    }).not.toThrow();
  });

  it('gives the children a proxy on a closed loopback port, with loopback and the allowlist exempt', () => {
    const env = airgapProxyEnv(resolve({ AIRGAP_ALLOWLIST: 'llm.x.com,.corp' }));
    expect(env.HTTP_PROXY).toBe(AIRGAP_PROXY);
    expect(env.https_proxy).toBe(AIRGAP_PROXY);
    expect(env.NO_PROXY).toBe('localhost,127.0.0.1,::1,llm.x.com,.corp');
    expect(env.no_proxy).toBe(env.NO_PROXY);
    expect(airgapProxyEnv(resolve({ AIRGAP: 'off' }))).toEqual({});
  });
});

describe('parseAppCommand', () => {
  it('splits plain commands like sh, with quotes and backslashes', () => {
    expect(parseAppCommand('uvicorn api.server:app --port 8000').argv).toEqual([
      'uvicorn',
      'api.server:app',
      '--port',
      '8000',
    ]);
    expect(parseAppCommand(`python -c 'print("a b")'`).argv).toEqual(['python', '-c', 'print("a b")']);
    expect(parseAppCommand('node "my app.js" a\\ b').argv).toEqual(['node', 'my app.js', 'a b']);
    expect(parseAppCommand('node --flag=x "a\\"b"').argv).toEqual(['node', '--flag=x', 'a"b']);
    expect(parseAppCommand('  a   b  ').shell).toBe(false);
  });

  it('runs anything with shell syntax through /bin/sh -c', () => {
    for (const cmd of [
      'cd /work && uvicorn api.server:app',
      'uvicorn app | tee log',
      'uvicorn app > log',
      'uvicorn --port $PORT',
      'uvicorn --port "$PORT"',
      'PYTHONPATH=/work uvicorn app',
      'ls *.py',
      'echo `date`',
      'a; b',
      'cat ~/x',
    ]) {
      const c = parseAppCommand(cmd);
      expect(c.shell, cmd).toBe(true);
      expect(c.argv).toEqual(['/bin/sh', '-c', cmd]);
    }
    // shell characters inside single quotes are plain text
    expect(parseAppCommand(`node -e 'a && b'`).shell).toBe(false);
  });

  it('refuses an unterminated quote or an empty command (exit 2)', () => {
    expect(usageError(() => parseAppCommand(`node 'x`)).message).toContain("unterminated ' quote");
    expect(usageError(() => parseAppCommand('node "x')).message).toContain('unterminated " quote');
    expect(usageError(() => resolve({ APP_COMMAND: "''" })).message).toContain('APP_COMMAND is empty');
  });
});
