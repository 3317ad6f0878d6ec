#!/usr/bin/env node
// How fast `run` acts on a signal while it waits for llama-server's health, a probe in flight: the
// LLM is a fault-injection server that never answers GET /health and ignores SIGTERM
// (test/fixtures/fault-server-hangs-health.js), so only run's own handling is measured.
//   - SIGTERM → run's "received SIGTERM" line (target ≤ 100 ms)
//   - SIGINT 0.3 s later (the second signal: kill at once) → run has exited, its init and the
//     server with it (the grace period is 60 s: anything near it would be a failure)
// Reference, in the same run: a plain Node process that prints a line on SIGTERM, and exits on SIGINT.
// Usage: node bench/run-signals.js [--trials 7]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, median, REPO, requireBuilt, verdict } from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 7;
const root = mkdtempSync(join(tmpdir(), 'codi-bench-signals-'));

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts `argv`, waits for `ready` on stdout, then times SIGTERM → `reacted`, and SIGINT → exit. */
async function trial(argv, env, ready, reacted) {
  const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, NO_COLOR: '1', ...env } });
  let out = '';
  const seen = (re) =>
    new Promise((resolve, reject) => {
      const check = () => (re.test(out) ? resolve(performance.now()) : undefined);
      child.stdout.on('data', (d) => {
        out += d;
        check();
      });
      child.on('close', () => reject(new Error(`ended before ${re}:\n${out}`)));
      check();
    });
  const closed = new Promise((resolve) => child.on('close', () => resolve(performance.now())));
  await seen(ready);
  await sleep(300);
  const term = performance.now();
  child.kill('SIGTERM');
  const termMs = (await seen(reacted)) - term;
  await sleep(300);
  const int = performance.now();
  child.kill('SIGINT');
  const intMs = (await closed) - int;
  return { termMs, intMs };
}

const run = [];
const ref = [];
const plain =
  "console.log('ready'); process.on('SIGTERM', () => console.log('received SIGTERM')); process.on('SIGINT', () => process.exit(0)); setInterval(() => {}, 1000);";
for (let i = 0; i < trials; i++) {
  run.push(
    await trial(
      [process.execPath, BIN, 'run'],
      {
        LLAMA_SERVER_BIN: join(REPO, 'test/fixtures/fault-server-hangs-health.js'),
        ADAPTER_PATH: join(REPO, 'examples/adapters/tiny-qwen2-lora'),
        BASE_MODEL_PATH: join(REPO, 'examples/base/tiny-qwen2.gguf'),
        CODE_MODEL: 'tiny-qwen2',
        MODEL_MOUNT_PATH: root,
        CODI_STATE_DIR: join(root, `state-${i}`),
        CODI_GGUF_CACHE: join(root, 'gguf'),
        PATTERNS_RULES: join(root, 'none.yml'),
        LLM_PORT: String(await freePort()),
        APP_COMMAND: 'none',
        STOP_GRACE_PERIOD: '60',
      },
      /fault-server-hangs-health: accepting/u,
      /received SIGTERM/u,
    ),
  );
  ref.push(await trial([process.execPath, '-e', plain], {}, /ready/u, /received SIGTERM/u));
}
const m = (xs, k) => median(xs.map((x) => x[k]));
console.log(`medians of ${trials} trials, a health probe in flight:`);
console.log(
  `  SIGTERM → acted on: run ${m(run, 'termMs').toFixed(0)} ms, plain node ${m(ref, 'termMs').toFixed(0)} ms (target ≤ 100 ms) ${verdict(m(run, 'termMs') <= 100)}`,
);
console.log(
  `  SIGINT (second signal) → exited: run ${m(run, 'intMs').toFixed(0)} ms (its init, the LLM killed and reaped; grace period 60 s), plain node ${m(ref, 'intMs').toFixed(0)} ms`,
);
rmSync(root, { recursive: true, force: true });
