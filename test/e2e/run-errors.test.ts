/**
 * `run`'s errors and small promises, through the built CLI, where no LLM is needed (LLM_ENABLED=false,
 * or a fault-injection server): the state directory checked before anything starts, each case with
 * its code and hint; an environment too large for Linux named by its variable; APP_COMMAND starting
 * with a word only a shell knows; bounds named; durations rounded; the ruleset version as written;
 * secrets kept out of what is printed.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { freePort } from '../helpers/llama.js';
import { processesLeft, startRun } from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

const APP = join(REPO, 'test/fixtures/run-app.js');
const HANGS = join(REPO, 'test/fixtures/fault-server-hangs-health.js');
const asUser = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];

let root: string;
let seq = 0;

beforeAll(async () => {
  root = await tempDir('codi-run-errors-');
});

// nothing a run started may outlive it (ps, as it were: /proc)
afterEach(async () => {
  expect(await processesLeft(root), 'processes left behind').toEqual([]);
});

interface Ended {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `codi-adapter run` with the LLM off and `env`, to its end. */
async function run(
  env: Record<string, string | undefined>,
  prefix: readonly string[] = [],
  args: readonly string[] = [],
): Promise<Ended> {
  const r = startRun(
    ['run', ...args],
    {
      LLM_ENABLED: 'false',
      AIRGAP: 'false',
      MODEL_MOUNT_PATH: root,
      CODI_STATE_DIR: join(root, `state-${++seq}`),
      PATTERNS_RULES: join(root, 'none.yml'),
      STOP_GRACE_PERIOD: '2',
      APP_COMMAND: 'true',
      ...env,
    },
    prefix,
  );
  const exit = await r.exited;
  return { code: exit.code, stdout: r.stdout(), stderr: r.stderr() };
}

describe('the state directory, checked before anything starts (exit 3, with its code and hint)', () => {
  it('a file where the folder should be, or on the way to it', async () => {
    await writeFile(join(root, 'a-file'), 'x');
    for (const dir of [join(root, 'a-file'), join(root, 'a-file/state')]) {
      const r = await run({
        CODI_STATE_DIR: dir,
        APP_COMMAND: `node ${APP} exit 0 ${join(root, 'never.json')}`,
      });
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/STATE_DIR_NOT_DIRECTORY: CODI_STATE_DIR .*a-file/u);
      expect(r.stderr).toMatch(
        /hint: remove or rename .*a-file, or set CODI_STATE_DIR to a writable folder/u,
      );
      expect(r.stdout).not.toMatch(/app started/u);
    }
  }, 60_000);

  it('a read-only file system, in the folder or above it (a read-only mount)', async () => {
    const ro = join(root, 'ro');
    await mkdir(join(ro, 'existing'), { recursive: true });
    // a mount namespace of its own, where `ro` is mounted read-only over itself
    const mountRo = [
      'unshare',
      ...asUser,
      '--mount',
      'sh',
      '-c',
      `mount --bind -o ro ${ro} ${ro} && exec "$@"`,
      'sh',
    ];
    for (const [dir, at] of [
      [join(ro, 'existing'), join(ro, 'existing')],
      [join(ro, 'new/state'), ro],
    ] as const) {
      const r = await run({ CODI_STATE_DIR: dir }, mountRo);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain('STATE_DIR_READ_ONLY: CODI_STATE_DIR');
      expect(r.stderr).toMatch(/a read-only file system/u);
      expect(r.stderr).toContain(`hint: mount a writable volume or a tmpfs there (docker run --tmpfs ${at})`);
      // the old message blamed a missing path
      expect(r.stderr).not.toMatch(/PATH_MISSING/u);
    }
  }, 60_000);

  it('a folder this user may not write, or not create in (as UID 65534)', async () => {
    const locked = join(root, 'locked');
    await mkdir(join(locked, 'state'), { recursive: true });
    // the test's folder itself must be passable for the other user
    await chmod(root, 0o755);
    await chmod(locked, 0o755);
    await chmod(join(locked, 'state'), 0o755);
    // as root, another user; else this user, who cannot write folders of mode 0555
    const asRoot = process.getuid?.() === 0;
    if (!asRoot) {
      await chmod(join(locked, 'state'), 0o555);
      await chmod(locked, 0o555);
    }
    const other = asRoot ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'] : [];
    for (const [dir, what] of [
      [join(locked, 'state'), 'cannot be written'],
      [join(locked, 'new'), `cannot be created in ${locked}`],
    ] as const) {
      const r = await run({ CODI_STATE_DIR: dir, HOME: '/tmp' }, other);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(
        new RegExp(
          `STATE_DIR_NOT_WRITABLE: CODI_STATE_DIR ${dir} ${what}: permission denied to UID \\d+`,
          'u',
        ),
      );
      expect(r.stderr).toMatch(
        /hint: make .* writable by this user \(chown or chmod\), or set CODI_STATE_DIR/u,
      );
    }
  }, 60_000);

  it('is created (0700) when it is missing, and environment.json in it is 0600', async () => {
    const dir = join(root, 'fresh/deeper/state');
    const r = await run({
      CODI_STATE_DIR: dir,
      APP_COMMAND: `node ${APP} exit 0 ${join(root, 'fresh.json')}`,
    });
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'environment.json'))).mode & 0o777).toBe(0o600);
  }, 60_000);
});

describe('an environment too large for Linux: exit 3 naming the variable, before anything starts', () => {
  /** `n` host names of 19 characters, comma-separated: 20n − 1 characters */
  const hosts = (n: number): string =>
    Array.from({ length: n }, (_, i) => `h${String(i).padStart(6, '0')}.example.com`).join(',');

  it('one variable over 128 KiB: NO_PROXY made from AIRGAP_ALLOWLIST (which itself still fits)', async () => {
    // the allowlist fits in one variable, but NO_PROXY adds loopback to it, and no longer does
    const list = hosts(6552);
    expect(Buffer.byteLength(`AIRGAP_ALLOWLIST=${list}`) + 1).toBeLessThanOrEqual(131_072);
    expect(Buffer.byteLength(`NO_PROXY=localhost,127.0.0.1,::1,${list}`) + 1).toBeGreaterThan(131_072);
    const r = await run({ AIRGAP: 'true', AIRGAP_ALLOWLIST: list });
    expect(r.code, r.stderr.slice(0, 500)).toBe(3);
    expect(r.stderr).toMatch(
      /ENV_TOO_LARGE: cannot start the app: NO_PROXY \(made from AIRGAP_ALLOWLIST\) is [\d,]+ bytes, longer than one environment variable may be \(131,072 bytes\)/u,
    );
    expect(r.stderr).toMatch(/hint: shorten AIRGAP_ALLOWLIST \(list domains with a leading dot/u);
    expect(r.stdout).not.toMatch(/app started/u);
    // the configuration print shortens the long value
    expect(r.stdout).toMatch(/AIRGAP_ALLOWLIST\s+h000000\.example\.com,.*… \(131,039 characters\)/u);
  }, 60_000);

  it('all of them over a quarter of the stack limit (ulimit -s 2048)', async () => {
    const big = 'y'.repeat(120_000);
    const r = await run({ AIRGAP: 'true', AIRGAP_ALLOWLIST: hosts(6000), BIG_ONE: big, BIG_TWO: big }, [
      'sh',
      '-c',
      'ulimit -s 2048 && exec "$@"',
      'sh',
    ]);
    expect(r.code, r.stderr.slice(0, 500)).toBe(3);
    expect(r.stderr).toMatch(
      /ENV_TOO_LARGE: cannot start the app: the environment and command line come to [\d.]+ KiB, more than a program may be given here \(512 KiB, a quarter of the stack limit\); the largest variables: NO_PROXY \(made from AIRGAP_ALLOWLIST\)/u,
    );
    expect(r.stderr).toMatch(/or raise the stack limit \(ulimit -s\)/u);
  }, 60_000);
});

describe('APP_COMMAND', () => {
  it.each([
    ['exec', (record: string) => `exec node ${APP} exit 0 ${record}`],
    ['cd', (record: string) => `cd ${REPO} && node test/fixtures/run-app.js exit 0 ${record}`],
    ['time', (record: string) => `time node ${APP} exit 0 ${record}`],
  ])(
    'starting with %s runs as sh -c would run it',
    async (_word, command) => {
      const record = join(root, `shell-word-${++seq}.json`);
      const r = await run({ APP_COMMAND: command(record) });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/app started \(pid \d+\): \/bin\/sh -c /u);
      expect(JSON.parse(await readFile(record, 'utf8'))).toMatchObject({ env: { LLM_ENABLED: 'false' } });
      expect(r.stderr).not.toMatch(/APP_NOT_FOUND/u);
    },
    60_000,
  );
});

describe('numbers in messages', () => {
  it('names the thread bound', async () => {
    const r = await run({ LLAMA_CPP_THREADS: '4096' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /LLAMA_CPP_THREADS must be a whole number of threads from 1 to 1,024, got "4096"/u,
    );
  }, 60_000);

  it('prints durations rounded (a probe cut short by the ready timeout, fault injection)', async () => {
    const r = await run({
      LLM_ENABLED: 'true',
      LLAMA_SERVER_BIN: HANGS,
      ADAPTER_PATH: join(REPO, 'examples/adapters/tiny-qwen2-lora'),
      BASE_MODEL_PATH: join(REPO, 'examples/base/tiny-qwen2.gguf'),
      CODE_MODEL: 'tiny-qwen2',
      LLM_PORT: String(await freePort()),
      LLM_READY_TIMEOUT: '1.3',
      CODI_GGUF_CACHE: join(root, 'gguf'),
      APP_COMMAND: 'none',
    });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(
      /LLM_NOT_READY: the LLM at http:\/\/127\.0\.0\.1:\d+ was not healthy within 1\.3 s \(last GET \/health: no answer within \d+(\.\d\d?)? (ms|s)\)/u,
    );
    // file names (the cache entry's holds hex digits after a dot) are not durations
    expect(`${r.stdout}${r.stderr}`.replace(/\/\S+/gu, '')).not.toMatch(/\d\.\d{4,}/u);
  }, 60_000);
});

describe('environment.json', () => {
  it('records the ruleset version as written (2026.10, not 2026.1), as promote does', async () => {
    const rules = join(root, 'rules-number.yml');
    await writeFile(rules, 'version: 2026.10\nllm_assist:\n  adapters: {}\n');
    const state = join(root, 'state-ruleset');
    const r = await run({
      PATTERNS_RULES: rules,
      CODI_STATE_DIR: state,
      APP_COMMAND: `node ${APP} exit 0 ${join(root, 'ruleset.json')}`,
    });
    expect(r.code, r.stderr).toBe(0);
    const env = JSON.parse(await readFile(join(state, 'environment.json'), 'utf8')) as {
      ruleset: { version: string };
    };
    expect(env.ruleset.version).toBe('2026.10');
  }, 60_000);
});

describe('secrets', () => {
  it('never prints URL credentials or token-like query values, not even in the errors', async () => {
    const port = await freePort();
    const r = await run({
      LLM_ENABLED: 'true',
      LLM_ENDPOINT: `http://alice:s3cr3t-pw@127.0.0.1:${port}`,
      APP_HEALTH_URL: `http://127.0.0.1:${port}/healthz?access_token=t0k3n-v4lue&verbose=1`,
      LLM_API_KEY: 'k3y-v4lue',
      LLM_HEALTH_RETRIES: '2',
      AIRGAP: 'true',
    });
    expect(r.code, r.stderr).toBe(4);
    const all = `${r.stdout}${r.stderr}`;
    for (const secret of ['s3cr3t-pw', 'alice', 't0k3n-v4lue', 'k3y-v4lue'])
      expect(all).not.toContain(secret);
    expect(all).toContain(`remote LLM http://***@127.0.0.1:${port}: attempt 1/2`);
    expect(all).toMatch(
      /APP_HEALTH_URL\s+http:\/\/127\.0\.0\.1:\d+\/healthz\?access_token=\*\*\*&verbose=1/u,
    );
    expect(all).toMatch(/LLM_API_KEY\s+\*\*\*\s+\(env\)/u);
    expect(r.stderr).toMatch(/LLM_UNREACHABLE: LLM_ENDPOINT http:\/\/\*\*\*@127\.0\.0\.1:\d+ not reachable/u);
  }, 60_000);

  it('--json: the error details carry no secret either', async () => {
    const r = await run(
      { LLM_ENDPOINT: 'http://bob:hunter2@llm.example.com:8081', LLM_ENABLED: 'true', AIRGAP: 'true' },
      [],
      ['--json'],
    );
    expect(r.code).toBe(3);
    const out = JSON.parse(r.stdout) as { error: { code: string } };
    expect(out.error.code).toBe('AIRGAP_BLOCKED');
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/hunter2|bob/u);
  }, 60_000);

  it('a malformed URL is refused without showing its credentials', async () => {
    const r = await run({ LLM_ENDPOINT: 'http://carol:pa55@host:8081/?q=1', LLM_ENABLED: 'true' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'LLM_ENDPOINT must be a base URL without a query or fragment, got "http://***@host:8081/?q=1"',
    );
    expect(r.stderr).not.toContain('pa55');
  }, 60_000);
});
