#!/usr/bin/env node
// `codi-adapter run` start-up against llama-server started directly, in the same run, on the same base
// model and adapter GGUF (warm cache: the GGUF is converted before the first trial). Trials alternate.
//   - healthy: from spawning the process to the first GET /health 200, polled by this script every 5 ms
//   - ready:   run only, until it has checked /lora-adapters and written environment.json
//   - RSS:     codi-adapter's own VmRSS (/proc/<pid>/status) while it supervises llama-server
// Targets: median healthy(run) − median healthy(direct) ≤ 0.4 s; RSS while supervising ≤ 80 MiB.
// Usage: node bench/run-startup.js [--trials 7] [--threads 2]   (LLAMA_SERVER_BIN, or the build script)
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, median, REPO, verdict } from './lib.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const trials = arg('--trials', 7);
const threads = arg('--threads', 2);

if (!existsSync(join(REPO, 'dist/index.js'))) {
  console.error('bench: run `npm run build` first');
  process.exit(3);
}
const bin =
  process.env.LLAMA_SERVER_BIN ||
  execFileSync('bash', [join(REPO, 'scripts/build-llama-server.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
    .trim()
    .split('\n')
    .pop();

const root = mkdtempSync(join(tmpdir(), 'codi-bench-run-'));
mkdirSync(join(root, 'adapters'));
mkdirSync(join(root, 'base'));
cpSync(join(REPO, 'examples/adapters/tiny-qwen2-lora'), join(root, 'adapters/tiny-qwen2-lora'), {
  recursive: true,
});
cpSync(join(REPO, 'examples/base/tiny-qwen2.gguf'), join(root, 'base/tiny-qwen2.gguf'));
// a real rules file, as in production: run reads the ruleset version from it (and loads the YAML parser)
cpSync(join(REPO, 'examples/patterns/rules.yml'), join(root, 'rules.yml'));
const base = join(root, 'base/tiny-qwen2.gguf');
const adapter = join(root, 'adapters/tiny-qwen2-lora');
// warm cache: the conversion run would otherwise do once
const converted = JSON.parse(
  execFileSync(process.execPath, [BIN, 'convert', adapter, '--base', base, '--json'], { encoding: 'utf8' }),
);
const gguf = converted.output;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function healthy(port) {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function untilHealthy(port, child, t0) {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('exited before healthy');
    if (await healthy(port)) return performance.now() - t0;
    await sleep(5);
  }
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** user + system CPU seconds of a process so far (clock ticks of 10 ms): independent of machine load */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'mu').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

async function direct() {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(
    bin,
    [
      '-m',
      base,
      '--lora',
      gguf,
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '-t',
      String(threads),
      '--no-webui',
      '--offline',
    ],
    { stdio: 'ignore' },
  );
  const ms = await untilHealthy(port, child, t0);
  await stop(child);
  return { healthy: ms };
}

async function viaRun() {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, 'run'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NO_COLOR: '1',
      LLAMA_SERVER_BIN: bin,
      MODEL_MOUNT_PATH: root,
      ADAPTER_PATH: adapter,
      CODE_MODEL: 'tiny-qwen2',
      LLM_PORT: String(port),
      LLAMA_CPP_THREADS: String(threads),
      CODI_STATE_DIR: join(root, 'state'),
      PATTERNS_RULES: join(root, 'rules.yml'),
      APP_COMMAND: 'none',
      // health checks every 0.5 s, so the RSS samples below cover supervision at work, not idle
      LLM_HEALTH_INTERVAL: '0.5',
    },
  });
  let out = '';
  let ready = null;
  let spawned = null;
  let cpu = NaN;
  child.stdout.on('data', (d) => {
    out += d;
    if (spawned === null && out.includes('starting llama-server')) {
      spawned = performance.now() - t0;
      cpu = cpuSeconds(child.pid);
    }
    if (ready === null && out.includes('serving the LLM until stopped')) ready = performance.now() - t0;
  });
  child.stderr.on('data', (d) => (out += d));
  const ms = await untilHealthy(port, child, t0);
  while (ready === null) {
    if (child.exitCode !== null) throw new Error(`run exited:\n${out}`);
    await sleep(5);
  }
  // supervising: sample for 3 s (about six health checks, each logged only when the state changes)
  const samples = [];
  for (let i = 0; i < 15; i++) {
    await sleep(200);
    samples.push(rssMiB(child.pid));
  }
  await stop(child);
  if (child.exitCode !== 0) throw new Error(`run exited ${child.exitCode}:\n${out}`);
  return {
    healthy: ms,
    ready,
    spawned,
    cpu,
    rss: Math.max(...samples.map((s) => s.rss)),
    hwm: Math.max(...samples.map((s) => s.hwm)),
  };
}

console.log(
  `llama-server: ${bin}\nmodel: tiny-qwen2 + ${gguf.split('/').pop()}, -t ${threads}, ${trials} trials each, alternating`,
);
const d = [];
const r = [];
try {
  await direct(); // discarded: page cache for the binary, model and libraries
  await viaRun();
  for (let i = 0; i < trials; i++) {
    d.push(await direct());
    r.push(await viaRun());
    process.stdout.write('.');
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
process.stdout.write('\n');
const ms = (v) => `${(v / 1000).toFixed(3)} s`;
const directMs = median(d.map((x) => x.healthy));
const runMs = median(r.map((x) => x.healthy));
const readyMs = median(r.map((x) => x.ready));
const spawnedMs = median(r.map((x) => x.spawned));
const cpuS = median(r.map((x) => x.cpu));
const added = runMs - directMs;
// the same, from each pair of adjacent trials, and from the fastest trial of each (a quiet moment):
// on a shared machine the spread between trials is larger than the difference being measured
const pairedMs = median(r.map((x, i) => x.healthy - (d[i]?.healthy ?? NaN)));
const bestMs = Math.min(...r.map((x) => x.healthy)) - Math.min(...d.map((x) => x.healthy));
const rss = Math.max(...r.map((x) => x.rss));
const hwm = Math.max(...r.map((x) => x.hwm));
console.log(
  `llama-server directly → healthy   median ${ms(directMs)}   (${d.map((x) => ms(x.healthy)).join(', ')})`,
);
console.log(
  `codi-adapter run → LLM healthy    median ${ms(runMs)}   (${r.map((x) => ms(x.healthy)).join(', ')})`,
);
console.log(
  `codi-adapter run → spawns llama-server median ${ms(spawnedMs)}   (config, verify, GGUF cache, checks; CPU ${cpuS.toFixed(2)} s)`,
);
console.log(`codi-adapter run → ready          median ${ms(readyMs)}   (lora check + environment.json)`);
console.log(`added by run (median)             ${ms(added)}   target ≤ 0.400 s   ${verdict(added <= 400)}`);
console.log(
  `  paired trials (median)         ${ms(pairedMs)}   fastest trial of each: ${ms(bestMs)}   (machine load ${loadavg()[0].toFixed(2)})`,
);
console.log(
  `run RSS while supervising         ${rss.toFixed(1)} MiB   target ≤ 80 MiB   ${verdict(rss <= 80)}   (peak during start-up ${hwm.toFixed(1)} MiB)`,
);
