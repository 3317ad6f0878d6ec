import { describe, expect, it } from 'vitest';
import { CodiError, ExitCode } from '../../src/errors.js';
import { AIRGAP_PROXY } from '../../src/run/airgap.js';
import {
  airgapProxyEnv,
  checkAirgap,
  endpointFor,
  parseAppCommand,
  resolveRunConfig,
  type ResolveInput,
  type RunConfig,
} from '../../src/run/config.js';
import { flagName, RUN_SETTINGS, SETTING_NAMES } from '../../src/run/settings.js';
import { rejected, thrown } from '../helpers/errors.js';

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
    expect(err.message).toContain('LLAMA_CPP_THREADS must be a whole number of threads from 1 to 1,024');
  });

  it('names the upper bound a value passed', () => {
    const err = usageError(() => resolve({ LLAMA_CPP_THREADS: '4096' }));
    expect(err.message).toBe(
      'LLAMA_CPP_THREADS must be a whole number of threads from 1 to 1,024, got "4096"',
    );
    expect(err.hint).toContain('from 1 to 1,024');
    expect(usageError(() => resolve({ STOP_GRACE_PERIOD: '100000' })).message).toBe(
      'STOP_GRACE_PERIOD must be a number of seconds > 0, at most 86,400, got "100000"',
    );
  });

  it('LLM_ENABLED spelled in an unknown way', () => {
    for (const bad of ['maybe', 'tru', 'enabled', '2', 'y']) {
      const err = usageError(() => resolve({ LLM_ENABLED: bad }));
      expect(err.message).toBe(`LLM_ENABLED must be true or false, got ${JSON.stringify(bad)}`);
      expect(err.hint).toContain('true/false, 1/0, yes/no, on/off');
    }
  });

  it('AIRGAP spelled in an unknown way', () => {
    for (const bad of ['maybe', 'tru', 'strictly', '2']) {
      const err = usageError(() => resolve({ AIRGAP: bad }));
      expect(err.message).toBe(`AIRGAP must be true, false or strict, got ${JSON.stringify(bad)}`);
    }
  });

  it('accepts booleans as true/false/1/0/yes/no/on/off in any case, and AIRGAP=strict', () => {
    for (const t of ['true', 'TRUE', '1', 'yes', 'On']) expect(resolve({ AIRGAP: t }).airgap).toBe(true);
    for (const f of ['false', 'False', '0', 'NO', 'off']) expect(resolve({ AIRGAP: f }).airgap).toBe(false);
    const strict = resolve({ AIRGAP: 'Strict' });
    expect([strict.airgap, strict.airgapMode, strict.settings.AIRGAP]).toEqual([true, 'strict', 'strict']);
    expect(resolve({}, { flags: { AIRGAP: 'strict' } }).airgapMode).toBe('strict');
    expect(resolve({}, { flags: { AIRGAP: false } }).airgapMode).toBe('off');
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
      /^AIRGAP_ALLOWLIST entry "http:\/\/bad\/" is not a host name, an address or an address block/u,
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

describe('air gap settings', () => {
  it('refuses a remote endpoint that is neither loopback nor allow-listed, naming both variables (exit 3)', async () => {
    const c = resolve({ LLM_ENDPOINT: 'http://llm.internal.example.com:8081' });
    const err = await rejected(checkAirgap(c));
    expect(err.exitCode).toBe(ExitCode.ENVIRONMENT);
    expect(err.code).toBe('AIRGAP_BLOCKED');
    expect(err.message).toMatch(/^LLM_ENDPOINT .* AIRGAP_ALLOWLIST/u);
  });

  it('allows loopback, allow-listed hosts, and anything with AIRGAP=false', async () => {
    await checkAirgap(resolve({ LLM_ENDPOINT: 'http://127.0.0.1:8081' }));
    await checkAirgap(
      resolve({ LLM_ENDPOINT: 'http://llm.x.com:8081', AIRGAP_ALLOWLIST: 'other, llm.x.com' }),
    );
    await checkAirgap(resolve({ LLM_ENDPOINT: 'http://llm.x.com:8081', AIRGAP: 'false' }));
  });

  it('holds APP_HEALTH_URL to the same rule, and only while there is an app to probe', async () => {
    const err = await rejected(checkAirgap(resolve({ APP_HEALTH_URL: 'http://status.example.com/healthz' })));
    expect(err.code).toBe('AIRGAP_BLOCKED');
    expect(err.message).toMatch(
      /^APP_HEALTH_URL http:\/\/status\.example\.com\/healthz is not allowed under AIRGAP/u,
    );
    expect(err.hint).toContain('point APP_HEALTH_URL at an allowed host');
    await checkAirgap(
      resolve({ APP_HEALTH_URL: 'http://status.example.com/healthz', AIRGAP_ALLOWLIST: 'example.com' }),
    );
    await checkAirgap(resolve({ APP_HEALTH_URL: 'http://127.0.0.1:8000/healthz' }));
    await checkAirgap(resolve({ APP_HEALTH_URL: 'http://status.example.com/healthz', APP_COMMAND: 'none' }));
  });

  it('gives the children a proxy on a closed loopback port, with loopback and the allowlist exempt', () => {
    const env = airgapProxyEnv(resolve({ AIRGAP_ALLOWLIST: 'llm.x.com,.corp,10.1.0.0/16' }));
    expect(env.HTTP_PROXY).toBe(AIRGAP_PROXY);
    expect(env.https_proxy).toBe(AIRGAP_PROXY);
    expect(env.NO_PROXY).toBe('localhost,127.0.0.1,::1,llm.x.com,corp,10.1.0.0/16');
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

  it('runs a command that starts with a word only a shell knows through /bin/sh -c', () => {
    for (const cmd of [
      'exec uvicorn app',
      'cd /work',
      'time node app.js',
      'export A=1',
      '. ./env.sh',
      'if true',
    ]) {
      expect(parseAppCommand(cmd), cmd).toEqual({ text: cmd, argv: ['/bin/sh', '-c', cmd], shell: true });
    }
    // the same words later in the command are arguments; a program named like one is found on PATH
    expect(parseAppCommand('node exec cd').argv).toEqual(['node', 'exec', 'cd']);
    expect(parseAppCommand('./exec').shell).toBe(false);
  });

  it('refuses an unterminated quote or an empty command (exit 2)', () => {
    expect(usageError(() => parseAppCommand(`node 'x`)).message).toContain("unterminated ' quote");
    expect(usageError(() => parseAppCommand('node "x')).message).toContain('unterminated " quote');
    expect(usageError(() => resolve({ APP_COMMAND: "''" })).message).toContain('APP_COMMAND is empty');
  });
});
