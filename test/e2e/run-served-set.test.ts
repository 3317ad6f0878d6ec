/**
 * The served set through the built CLI, without the real llama-server: an `ADAPTERS` list naming an
 * adapter the catalog lacks, sets that come out empty (refused before llama-server starts), malformed
 * lists, the gateway's /health against a llama-server stand-in whose `/lora-adapters` drifts from the
 * served set (fault injection), and the reload command `mount --activate` and `promote` print.
 */
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeAdapter, makeVolume, openTempDir } from '../helpers/catalog.js';
import { REPO, runCli } from '../helpers/cli.js';
import { call } from '../helpers/gateway.js';
import { freePort } from '../helpers/llama.js';
import { processesMentioning, startRun } from '../helpers/run-process.js';

const BASE_ID = 'tiny-qwen2';
const FAULT_DRIFT = join(REPO, 'test/fixtures/fault-server-lora-drift.js');
const RELOAD_LINE =
  'a run serving through its gateway picks it up with: codi-adapter reload (or kill -HUP <run pid>; in a container: docker exec <name> codi-adapter reload)';

let dir: string;
let base: string;

beforeAll(async () => {
  dir = await openTempDir('codi-served-set-');
  await mkdir(join(dir, 'base'));
  base = join(dir, 'base', `${BASE_ID}.gguf`);
  await cp(join(REPO, 'examples/base/tiny-qwen2.gguf'), base);
  let seed = 500;
  for (const id of ['tiny-a', 'tiny-b']) await makeAdapter(join(dir, 'adapters'), id, { seed: seed++ });
}, 120_000);

function env(extra: Record<string, string | undefined>): Record<string, string | undefined> {
  return {
    LLAMA_SERVER_BIN: FAULT_DRIFT,
    MODEL_MOUNT_PATH: dir,
    ADAPTER_PATH: undefined,
    CODE_MODEL: BASE_ID,
    CODI_STATE_DIR: join(dir, 'state'),
    PATTERNS_RULES: join(dir, 'no-rules.yml'),
    LLAMA_CPP_THREADS: '2',
    STOP_GRACE_PERIOD: '3',
    LLM_ENDPOINT: undefined,
    LLM_ENABLED: undefined,
    AIRGAP: undefined,
    APP_COMMAND: 'none',
    ...extra,
  };
}

describe('ADAPTERS through the built CLI', () => {
  it('refuses a set that comes out empty with SERVED_SET_EMPTY (exit 1), before llama-server starts', async () => {
    const empty = await openTempDir('codi-served-empty-');
    await mkdir(join(empty, 'adapters'));
    const cases: [string, Record<string, string | undefined>, RegExp][] = [
      [
        'ids none of which is mounted',
        { ADAPTERS: 'ghost,phantom' },
        /ghost ADAPTER_NOT_MOUNTED, phantom ADAPTER_NOT_MOUNTED/u,
      ],
      ['all, on an empty catalog', { ADAPTERS: 'all', MODEL_MOUNT_PATH: empty }, /none listed/u],
      [
        'promoted, without a rules file',
        { ADAPTERS: 'promoted' },
        /the rules file PATTERNS_RULES cannot be read/u,
      ],
    ];
    for (const [what, extra, message] of cases) {
      const r = await runCli(['run', '--json'], {
        env: env({ LLM_PORT: String(await freePort()), ...extra }),
      });
      expect(r.code, `${what}: ${r.stdout}${r.stderr}`).toBe(1);
      expect(r.json, what).toMatchObject({ ok: false, error: { code: 'SERVED_SET_EMPTY' } });
      expect((r.json as { error: { message: string } }).error.message, what).toMatch(message);
      expect(r.stdout + r.stderr, what).not.toMatch(
        /starting llama-server|fault-server-lora-drift: serving/u,
      );
      expect(r.stderr, what).not.toMatch(/\n\s+at /u);
    }
    expect(processesMentioning(dir)).toEqual([]);
  }, 120_000);

  it('refuses a malformed list with exit 2 naming ADAPTERS', async () => {
    for (const [value, message] of [
      ['tiny-a,,tiny-b', /an empty id/u],
      ['tiny-a,tiny-a', /ADAPTERS names tiny-a twice/u],
      ['tiny-a,../tiny-b', /"\.\.\/tiny-b"/u],
    ] as const) {
      const r = await runCli(['run', '--json'], {
        env: env({ ADAPTERS: value, LLM_PORT: String(await freePort()) }),
      });
      expect(r.code, `${value}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.json, value).toMatchObject({ ok: false, error: { code: 'CONFIG_INVALID' } });
      const text = (r.json as { error: { message: string } }).error.message;
      expect(text, value).toMatch(message);
      expect(text, value).toContain('ADAPTERS');
      expect(r.stderr, value).not.toMatch(/\n\s+at /u);
    }
  }, 60_000);
});

describe("the gateway's /health (fault injection: a llama-server stand-in)", () => {
  it('serves a comma list without the unknown id, and is 503 with its reason while llama-server lists another set or is not healthy; run then exits 4', async () => {
    const port = await freePort();
    const gateway = `http://127.0.0.1:${port}`;
    const stateDir = join(dir, 'state-health');
    const run = startRun(
      ['run'],
      env({
        ADAPTERS: 'tiny-a,ghost,tiny-b',
        LLM_PORT: String(port),
        CODI_STATE_DIR: stateDir,
        // long enough for the drift to be looked at and undone before run counts 3 failures in a row
        LLM_HEALTH_INTERVAL: '8',
        LLM_HEALTH_RETRIES: '3',
      }),
    );
    try {
      await run.waitFor(/environment recorded/u, 120_000);
      const environment = JSON.parse(await readFile(join(stateDir, 'environment.json'), 'utf8')) as {
        gateway: { served: { id: string }[]; not_served: { id: string; code: string }[] };
      };
      expect(environment.gateway.served.map((s) => s.id)).toEqual(['tiny-a', 'tiny-b']);
      expect(environment.gateway.not_served).toEqual([
        expect.objectContaining({ id: 'ghost', code: 'ADAPTER_NOT_MOUNTED' }),
      ]);
      expect(run.stdout() + run.stderr()).toMatch(/adapter ghost not served: ADAPTER_NOT_MOUNTED/u);

      const ok = await call(gateway, '/health');
      expect(ok.status).toBe(200);
      expect(ok.json).toMatchObject({ status: 'ok', adapters: ['tiny-a', 'tiny-b'] });

      await writeFile(`${base}.fault`, 'missing');
      const missing = await call(gateway, '/health');
      expect(missing.status).toBe(503);
      expect(missing.json).toMatchObject({ status: 'unavailable' });
      expect((missing.json as { reason: string }).reason).toMatch(
        /GET \/lora-adapters lists 1 adapters, not 2/u,
      );

      await writeFile(`${base}.fault`, 'moved');
      const moved = await call(gateway, '/health');
      expect(moved.status).toBe(503);
      expect((moved.json as { reason: string }).reason).toMatch(
        /adapter 0 is \/tmp\/not-the-adapter\.gguf, not where the gateway expects it/u,
      );

      await writeFile(`${base}.fault`, 'ok');
      expect((await call(gateway, '/health')).status).toBe(200);

      await writeFile(`${base}.fault`, 'unhealthy');
      const down = await call(gateway, '/health');
      expect(down.status).toBe(503);
      expect((down.json as { reason: string }).reason).toMatch(/^llama-server is not healthy: 503/u);
      // left so, run's own health checks (of the gateway) fail LLM_HEALTH_RETRIES times in a row: exit 4
      const ended = await run.exited;
      expect(ended.code, run.stdout() + run.stderr()).toBe(4);
      expect(run.stderr()).toMatch(/LLM_UNHEALTHY/u);
    } finally {
      run.child.kill('SIGKILL');
      await run.exited;
      await writeFile(`${base}.fault`, 'ok');
    }
    expect(processesMentioning(dir)).toEqual([]);
  }, 180_000);
});

describe('the reload command', () => {
  it('mount --activate prints it (mount alone does not)', async () => {
    const { root, src } = await makeVolume();
    const a = await makeAdapter(src, 'tiny-a', { seed: 1 });
    const b = await makeAdapter(src, 'tiny-b', { seed: 2 });
    const plain = await runCli(['mount', a, '--root', root]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).not.toContain('codi-adapter reload');
    const activated = await runCli(['mount', b, '--root', root, '--activate']);
    expect(activated.code, activated.stderr).toBe(0);
    expect(activated.stdout).toContain('active → tiny-b');
    expect(activated.stdout).toContain(RELOAD_LINE);
  }, 60_000);

  it('promote prints it', async () => {
    const ws = await openTempDir('codi-reload-promote-');
    const rules = join(ws, 'rules.yml');
    await cp(join(REPO, 'examples/patterns/rules.yml'), rules);
    const adapter = await makeAdapter(ws, 'tiny-qwen2-lora');
    const r = await runCli([
      'promote',
      adapter,
      '--rules',
      rules,
      '--eval',
      join(REPO, 'examples/eval.json'),
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(RELOAD_LINE);
  }, 60_000);
});
