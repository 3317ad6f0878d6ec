/**
 * docker/Dockerfile.complete, checked statically (the image itself is built and run by
 * `npm run test:container`): what it copies exists and is not excluded by .dockerignore, the entrypoint
 * is the built CLI under tini, it runs as UID 1000, llama-server comes from the build script with
 * --portable in a cache mount, and the documented ports, volumes and healthcheck are there. What runs
 * here for real: `make -n build-complete`, the llama-server step under its own SHELL (with a stand-in
 * build script), the build script's failures, and the old entry-point wrappers against a stand-in CLI.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, REPO } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** Instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (current !== '' && line.startsWith('#')) continue;
    current += `${current ? ' ' : ''}${line.replace(/\\$/u, '').trim()}`;
    if (line.endsWith('\\')) continue;
    const m = /^(\S+)\s*(.*)$/u.exec(current);
    current = '';
    if (!m) continue;
    const op = (m[1] ?? '').toUpperCase();
    if (op === 'FROM') stage++;
    out.push({ op, args: m[2] ?? '', stage });
  }
  return out;
}

const dockerfile = readFileSync(join(REPO, 'docker/Dockerfile.complete'), 'utf8');
const instructions = parseDockerfile(dockerfile);
const of = (op: string): Instruction[] => instructions.filter((i) => i.op === op);
const finalStage = Math.max(...instructions.map((i) => i.stage));
const stageNames = new Map(
  of('FROM').map((i) => [/\bAS\s+(\S+)/iu.exec(i.args)?.[1]?.toLowerCase() ?? `#${i.stage}`, i.stage]),
);

/** COPY [--from=x] [--chown=…] src… dest */
function copyParts(args: string): { from: string | null; sources: string[]; dest: string } {
  const words = args.split(/\s+/u).filter((w) => w !== '');
  let from: string | null = null;
  const rest: string[] = [];
  for (const w of words) {
    const f = /^--from=(.+)$/u.exec(w);
    if (f) from = f[1] ?? null;
    else if (!w.startsWith('--')) rest.push(w);
  }
  return { from, sources: rest.slice(0, -1), dest: rest[rest.length - 1] ?? '' };
}

function dockerignored(path: string): boolean {
  const patterns = readFileSync(join(REPO, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const clean = path.replace(/^\.\//u, '').replace(/\/$/u, '');
  return patterns.some((p) => {
    if (p.startsWith('!')) return false;
    const re = new RegExp(
      `^${p
        .replace(/[.+^${}()|[\]\\]/gu, '\\$&')
        .replace(/\*\*\//gu, '(.*/)?')
        .replace(/\*/gu, '[^/]*')}(/.*)?$`,
      'u',
    );
    return re.test(clean);
  });
}

describe('docker/Dockerfile.complete', () => {
  it('builds FROM ARG BASE_IMAGE=codi:slim', () => {
    expect(dockerfile).toMatch(/^ARG BASE_IMAGE=codi:slim$/mu);
    const last = of('FROM').find((i) => i.stage === finalStage);
    expect(last?.args).toBe('${BASE_IMAGE}');
  });

  it('copies only files that exist in the repository and are not excluded from the build context', () => {
    const copies = of('COPY')
      .map((i) => copyParts(i.args))
      .filter((c) => c.from === null);
    expect(copies.length).toBeGreaterThan(5);
    for (const c of copies) {
      for (const src of c.sources) {
        expect(existsSync(join(REPO, src)), `COPY ${src}: missing from the repository`).toBe(true);
        expect(dockerignored(src), `COPY ${src}: excluded by .dockerignore`).toBe(false);
      }
    }
    expect(of('ADD')).toEqual([]);
  });

  it('copies from stages it defines', () => {
    for (const c of of('COPY').map((i) => copyParts(i.args))) {
      if (c.from !== null) expect(stageNames.has(c.from.toLowerCase()), `--from=${c.from}`).toBe(true);
    }
  });

  it('builds llama-server with scripts/build-llama-server.sh --portable, in a build stage', () => {
    const llama = stageNames.get('llama');
    expect(llama).toBeDefined();
    const runs = of('RUN').filter((i) => i.stage === llama);
    expect(runs.some((r) => /scripts\/build-llama-server\.sh --portable\b/u.test(r.args))).toBe(true);
    expect(
      of('COPY').some((i) => i.stage === llama && i.args.includes('scripts/build-llama-server.sh')),
    ).toBe(true);
    expect(dockerfile).not.toMatch(/-march=native|GGML_NATIVE=ON/u);
    // the script itself selects the runtime-dispatched variants for --portable
    const script = readFileSync(join(REPO, 'scripts/build-llama-server.sh'), 'utf8');
    expect(script).toMatch(/GGML_NATIVE=OFF .*GGML_BACKEND_DL=ON .*GGML_CPU_ALL_VARIANTS=ON/u);
  });

  it('installs codi-adapter built from source (npm ci, npm run build)', () => {
    const cli = stageNames.get('cli');
    const runs = of('RUN').filter((i) => i.stage === cli);
    expect(runs.some((r) => /npm ci\b/u.test(r.args))).toBe(true);
    expect(runs.some((r) => /npm run build\b/u.test(r.args))).toBe(true);
    for (const needed of ['src', 'bin', 'schemas', 'scripts', 'package.json']) {
      expect(
        of('COPY').some((i) => i.stage === cli && copyParts(i.args).sources.includes(needed)),
        `the cli stage copies ${needed}`,
      ).toBe(true);
    }
    expect(
      of('COPY').some(
        (i) => i.stage === finalStage && /--from=cli \/opt\/codi-adapter \/opt\/codi-adapter/u.test(i.args),
      ),
    ).toBe(true);
  });

  it('has the built CLI as its entrypoint, under tini', () => {
    const entry = of('ENTRYPOINT');
    expect(entry).toHaveLength(1);
    const argv = JSON.parse(entry[0]?.args ?? '[]') as string[];
    expect(argv).toEqual(['/usr/bin/tini', '--', 'node', '/opt/codi-adapter/bin/run.js', 'run']);
    expect(existsSync(join(REPO, 'bin/run.js'))).toBe(true);
    expect(readFileSync(join(REPO, 'bin/run.js'), 'utf8')).toContain("import('@oclif/core')");
    expect(of('RUN').some((i) => i.stage === finalStage && /\btini\b/u.test(i.args))).toBe(true);
  });

  it('runs as UID 1000', () => {
    const users = of('USER').filter((i) => i.stage === finalStage);
    expect(users[users.length - 1]?.args).toMatch(/^1000(:1000)?$/u);
    // and the last USER comes after every RUN of the final stage
    const lastRun = instructions.lastIndexOf(
      of('RUN')
        .filter((i) => i.stage === finalStage)
        .pop() as Instruction,
    );
    const lastUser = instructions.lastIndexOf(users[users.length - 1] as Instruction);
    expect(lastUser).toBeGreaterThan(lastRun);
  });

  it('exposes 8000 and 8081, declares the /work and /models volumes, and has a HEALTHCHECK', () => {
    expect(of('EXPOSE').flatMap((i) => i.args.split(/\s+/u))).toEqual(
      expect.arrayContaining(['8000', '8081']),
    );
    const volumes = of('VOLUME').flatMap((i) =>
      i.args.startsWith('[') ? (JSON.parse(i.args) as string[]) : i.args.split(/\s+/u),
    );
    expect(volumes).toEqual(expect.arrayContaining(['/work', '/models']));
    const health = of('HEALTHCHECK');
    expect(health).toHaveLength(1);
    expect(health[0]?.args).toMatch(/CMD \["node", "\/opt\/codi-adapter\/docker\/healthcheck\.js"\]/u);
    expect(dockerfile).toMatch(/COPY docker\/healthcheck\.js \/opt\/codi-adapter\/docker\/healthcheck\.js/u);
  });

  it('binds the LLM on every interface and points LLAMA_SERVER_BIN at the built server', () => {
    expect(dockerfile).toMatch(/LLM_HOST=0\.0\.0\.0/u);
    expect(dockerfile).toMatch(/LLAMA_SERVER_BIN=\/opt\/llama\.cpp\/bin\/llama-server/u);
  });

  it('installs the old entry points at /opt/codi/scripts', () => {
    const copy = of('COPY').find((i) => i.args.includes('docker/scripts/mount_adapter.sh'));
    expect(copyParts(copy?.args ?? '').dest).toBe('/opt/codi/scripts/');
    expect(copyParts(copy?.args ?? '').sources).toEqual(
      expect.arrayContaining(['docker/scripts/verify_adapter.py', 'docker/scripts/mount_adapter.sh']),
    );
    for (const f of [
      'docker/scripts/verify_adapter.py',
      'docker/scripts/mount_adapter.sh',
      'docker/healthcheck.js',
    ]) {
      expect(statSync(join(REPO, f)).mode & 0o111, `${f} is executable`).not.toBe(0);
    }
  });

  it("keeps llama.cpp in a build cache mount, the build script's cache", () => {
    const llama = stageNames.get('llama');
    const build = of('RUN').find((i) => i.stage === llama && i.args.includes('build-llama-server.sh'));
    expect(build?.args).toMatch(/^--mount=type=cache,(\S*,)?target=\/build\/cache(,\S*)? /u);
    expect(
      of('ENV').some((i) => i.stage === llama && /^CODI_LLAMA_CACHE=\/build\/cache$/u.test(i.args)),
    ).toBe(true);
  });
});

describe('make build-complete', () => {
  const makeN = (...vars: string[]): { status: number | null; out: string } => {
    const r = spawnSync('make', ['-n', 'build-complete', ...vars], { cwd: REPO, encoding: 'utf8' });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  const tail =
    '-f docker/Dockerfile.complete --build-arg BASE_IMAGE=codi:slim --build-arg NODE_IMAGE=node:20-bookworm-slim -t codi:complete .';

  it('builds codi:complete with docker and BuildKit by default', () => {
    expect(makeN()).toEqual({ status: 0, out: `DOCKER_BUILDKIT=1 docker build ${tail}\n` });
  });

  it('builds in docker format with podman and buildah, so the HEALTHCHECK is kept', () => {
    expect(makeN('DOCKER=podman').out).toBe(`podman build --format docker ${tail}\n`);
    expect(makeN('DOCKER=buildah').out).toBe(`buildah build --format docker --layers ${tail}\n`);
    const whole = 'buildah bud --format docker --isolation chroot';
    expect(makeN(`DOCKER=${whole}`).out).toBe(`${whole} ${tail}\n`);
  });

  it('refuses a podman or buildah command that would build an OCI image', () => {
    const r = makeN('DOCKER=buildah bud --isolation chroot');
    expect(r.status).not.toBe(0);
    expect(r.out).toMatch(/drops the HEALTHCHECK: add --format docker/u);
  });

  it('passes BASE_IMAGE, NODE_IMAGE and IMAGE to the build', () => {
    expect(makeN('BASE_IMAGE=b:1', 'NODE_IMAGE=n:2', 'IMAGE=i:3').out).toBe(
      'DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.complete --build-arg BASE_IMAGE=b:1 --build-arg NODE_IMAGE=n:2 -t i:3 .\n',
    );
  });
});

describe('a failed llama-server build says why', () => {
  const script = join(REPO, 'scripts/build-llama-server.sh');

  /** A folder of executables for PATH: name → shell script body. */
  async function tools(bodies: Record<string, string>): Promise<string> {
    const dir = await tempDir('codi-llama-tools-');
    for (const [name, body] of Object.entries(bodies)) {
      await writeFile(join(dir, name), `#!/bin/sh\n${body}\n`);
      await chmod(join(dir, name), 0o755);
    }
    return dir;
  }

  async function build(
    args: string[],
    env: Record<string, string>,
  ): Promise<{ status: number | null; stdout: string; stderr: string }> {
    const cache = await tempDir('codi-llama-cache-');
    const r = spawnSync('bash', [script, '--cache', cache, ...args], {
      env: { HOME: cache, PATH: process.env.PATH ?? '', ...env },
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  // cmake and c++ are never reached in these cases: stand-ins keep the test independent of them
  const compilers = { cmake: 'exit 0', 'c++': 'exit 0' };

  it('a missing tool: named, exit 3, nothing on stdout', async () => {
    const empty = await tempDir('codi-llama-path-');
    const r = spawnSync('/bin/bash', [script, '--cache', empty], { env: { PATH: empty }, encoding: 'utf8' });
    expect(r.status).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/missing tool: cmake \(install it, e\.g\. apt-get install cmake\)/u);
  });

  it("an unreachable npm registry: npm's own error and what failed, nothing on stdout", async () => {
    const bin = await tools(compilers);
    const r = await build([], {
      PATH: `${bin}:${process.env.PATH ?? ''}`,
      npm_config_registry: 'http://127.0.0.1:9/',
      npm_config_fetch_retries: '0',
      npm_config_cache: await tempDir('codi-npm-cache-'),
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/npm error .*ECONNREFUSED/u);
    expect(r.stderr).toMatch(
      /npm pack node-llama-cpp@\S+ failed \(npm's error above; registry: http:\/\/127\.0\.0\.1:9\/\)/u,
    );
  });

  it("a source bundle git cannot clone: git's own error and what failed", async () => {
    const bin = await tools({
      ...compilers,
      npm: [
        'mkdir -p package/llama',
        'echo "not a bundle" > package/llama/gitRelease.bundle',
        'echo "{}" > package/llama/llama.cpp.info.json',
        'tar -czf node-llama-cpp-0.0.0.tgz package && rm -rf package',
      ].join('\n'),
    });
    const r = await build([], { PATH: `${bin}:${process.env.PATH ?? ''}` });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^fatal: /mu);
    expect(r.stderr).toMatch(/git clone of the llama\.cpp source bundle in node-llama-cpp@\S+ failed/u);
  });

  it("cmake failing: cmake's last lines and the log's path", async () => {
    const source = await tempDir('codi-llama-src-');
    await mkdir(join(source, 'tools/server'), { recursive: true });
    await writeFile(join(source, 'CMakeLists.txt'), 'project(stand_in)\n');
    const configure = await tools({
      ...compilers,
      cmake: 'echo "CMake Error at CMakeLists.txt:1: stand-in" >&2; exit 1',
    });
    const r = await build(['--source', source], { PATH: `${configure}:${process.env.PATH ?? ''}` });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /CMake Error at CMakeLists\.txt:1: stand-in\n.*cmake configure failed \(.*full log: /u,
    );

    const compile = await tools({
      ...compilers,
      cmake: 'if [ "$1" = --build ]; then echo "x.cpp:1: error: stand-in"; exit 2; fi',
    });
    const c = await build(['--source', source], { PATH: `${compile}:${process.env.PATH ?? ''}` });
    expect(c.status).toBe(1);
    expect(c.stdout).toBe('');
    expect(c.stderr).toMatch(/x\.cpp:1: error: stand-in\n.*build failed \(exit 2; /u);
  });
});

describe("the Dockerfile's llama-server step, run by its own SHELL", () => {
  const llama = stageNames.get('llama');
  const shell = JSON.parse(of('SHELL').find((i) => i.stage === llama)?.args ?? '[]') as string[];
  const step = of('RUN').find((i) => i.stage === llama && i.args.includes('build-llama-server.sh'));

  /** The step's command (mount options dropped, /opt moved into `dir`) with a stand-in build script. */
  async function runStep(
    scriptBody: string,
  ): Promise<{ status: number | null; stdout: string; stderr: string; dir: string }> {
    const dir = await tempDir('codi-llama-step-');
    await mkdir(join(dir, 'scripts'));
    await writeFile(join(dir, 'scripts/build-llama-server.sh'), scriptBody);
    const command = (step?.args ?? '').replace(/^(--\S+\s+)+/u, '').replaceAll('/opt/', `${dir}/opt/`);
    const [file, ...args] = shell;
    const r = spawnSync(file ?? '/bin/sh', [...args, command], { cwd: dir, encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, dir };
  }

  it('uses bash with pipefail', () => {
    expect(shell).toEqual(['/bin/bash', '-o', 'pipefail', '-c']);
  });

  it("stops at a failed build with the script's message, before copying anything", async () => {
    const r = await runStep('echo "[llama-build] npm pack failed (stand-in)" >&2\nexit 1\n');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('[llama-build] npm pack failed (stand-in)');
    expect(r.stderr).not.toMatch(/cannot stat/u);
    expect(existsSync(join(r.dir, 'opt'))).toBe(false);
  });

  it('stops when the script names no executable', async () => {
    const r = await runStep('echo "not a path"\n');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /build-llama-server\.sh gave no llama-server executable \(last line: 'not a path'\)/u,
    );
    expect(existsSync(join(r.dir, 'opt'))).toBe(false);
  });

  it('installs the server the script built', async () => {
    const r = await runStep(
      [
        'out="$PWD/cache/key"',
        'mkdir -p "$out/bin"',
        'printf \'#!/bin/sh\\necho "version: stand-in"\\n\' > "$out/bin/llama-server"',
        'chmod +x "$out/bin/llama-server"',
        'echo "version: stand-in" > "$out/VERSION"',
        'echo "[llama-build] done" >&2',
        'echo "$out/bin/llama-server"',
      ].join('\n'),
    );
    expect(r.stderr).toBe('[llama-build] done\n');
    expect(r.status).toBe(0);
    // the step ends by running the installed server
    expect(r.stdout).toBe('version: stand-in\n');
    expect(readFileSync(join(r.dir, 'opt/llama.cpp/VERSION'), 'utf8')).toBe('version: stand-in\n');
    expect(statSync(join(r.dir, 'opt/llama.cpp/bin/llama-server')).mode & 0o111).not.toBe(0);
  });
});

describe('the old entry points (thin wrappers)', () => {
  async function standIn(): Promise<{ cli: string; log: string }> {
    const dir = await tempDir('codi-wrapper-');
    const cli = join(dir, 'codi-adapter');
    const log = join(dir, 'args.txt');
    await writeFile(cli, `#!/bin/sh\nprintf '%s\\n' "$@" > ${log}\nexit 7\n`);
    await chmod(cli, 0o755);
    return { cli, log };
  }

  it('verify_adapter.py passes its arguments to codi-adapter verify and returns its exit status', async () => {
    const { cli, log } = await standIn();
    const r = spawnSync('python3', ['docker/scripts/verify_adapter.py', '/models/adapters/x y', '--strict'], {
      cwd: REPO,
      env: { ...process.env, CODI_ADAPTER_BIN: cli },
    });
    expect(r.status).toBe(7);
    expect(readFileSync(log, 'utf8')).toBe('verify\n/models/adapters/x y\n--strict\n');
  });

  it('verify_adapter.py against the real CLI: 0 valid, 1 invalid, 3 missing', async () => {
    const dir = await tempDir('codi-wrapper-bin-');
    const cli = join(dir, 'codi-adapter');
    await writeFile(cli, `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
    await chmod(cli, 0o755);
    const run = (adapter: string): number | null =>
      spawnSync('python3', ['docker/scripts/verify_adapter.py', adapter], {
        cwd: REPO,
        env: { ...process.env, CODI_ADAPTER_BIN: cli, NO_COLOR: '1' },
      }).status;
    expect(run('examples/adapters/tiny-qwen2-lora')).toBe(0);
    expect(run('examples/adapters/broken-checksum')).toBe(1);
    expect(run('examples/adapters/does-not-exist')).toBe(3);
  }, 60_000);

  it('mount_adapter.sh passes its arguments to codi-adapter mount and returns its exit status', async () => {
    const { cli, log } = await standIn();
    const r = spawnSync(
      'docker/scripts/mount_adapter.sh',
      ['/models/adapters/qwen15b-lora-v0.1', '--activate'],
      {
        cwd: REPO,
        env: { ...process.env, CODI_ADAPTER_BIN: cli },
      },
    );
    expect(r.status).toBe(7);
    expect(readFileSync(log, 'utf8')).toBe('mount\n/models/adapters/qwen15b-lora-v0.1\n--activate\n');
  });

  it('the HEALTHCHECK is unhealthy until run has written environment.json', async () => {
    const dir = await tempDir('codi-health-');
    const r = spawnSync(process.execPath, ['docker/healthcheck.js'], {
      cwd: REPO,
      env: { ...process.env, CODI_STATE_DIR: dir },
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^starting: .*environment\.json not written yet/u);
  });

  it('both say what to do when the CLI is missing (exit 3)', () => {
    const env = { ...process.env, CODI_ADAPTER_BIN: '/nonexistent/codi-adapter' };
    const py = spawnSync('python3', ['docker/scripts/verify_adapter.py', 'x'], {
      cwd: REPO,
      env,
      encoding: 'utf8',
    });
    expect(py.status).toBe(3);
    expect(py.stderr).toMatch(/make build-complete/u);
    const sh = spawnSync('docker/scripts/mount_adapter.sh', ['x'], { cwd: REPO, env, encoding: 'utf8' });
    expect(sh.status).toBe(3);
    expect(sh.stderr).toMatch(/make build-complete/u);
  });
});
