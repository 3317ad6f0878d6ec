#!/usr/bin/env node
// The gateway against llama-server reached directly, in the same run: `codi-adapter run` serves three
// tiny adapters through its gateway, and the same requests (with the `lora` list the gateway would
// write) go to its llama-server on loopback, turn about.
//   - latency: POST /completion, n_predict 1, one request at a time: p50 and p99 of each, and the
//     gateway's added latency (p50 ≤ 1 ms, p99 ≤ 5 ms)
//   - streaming: 16 clients streaming at once for a fixed time, tokens per second (≥ 0.97× direct)
//   - RSS: run's own VmRSS (the gateway is in run's process) at its peak under the streaming load,
//     and its growth over run idle (≤ 80 MiB)
//   - reload: from SIGHUP to the new set serving (reload.json), against llama-server's cold start
//     with the same three adapters (spawn to GET /health 200); target ≤ cold start + 1 s
// Usage: node bench/gateway.js [--requests 400] [--seconds 8] [--rounds 3] [--reloads 3]
import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Buffer } from 'node:buffer';
import { setInterval, clearInterval } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { BIN, median, REPO, verdict } from './lib.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const requests = arg('--requests', 400);
const seconds = arg('--seconds', 8);
const rounds = arg('--rounds', 3);
const reloads = arg('--reloads', 3);

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

const { writePeftAdapter } = await import(join(REPO, 'dist/testkit/peft-adapter.js'));
const { exampleSpec } = await import(join(REPO, 'dist/testkit/examples.js'));

const root = mkdtempSync(join(tmpdir(), 'codi-bench-gateway-'));
mkdirSync(join(root, 'adapters'));
mkdirSync(join(root, 'base'));
cpSync(join(REPO, 'examples/base/tiny-qwen2.gguf'), join(root, 'base/tiny-qwen2.gguf'));
const ids = ['tiny-a', 'tiny-b', 'tiny-c'];
for (const [i, id] of ids.entries()) {
  await writePeftAdapter(join(root, 'adapters', id), { ...exampleSpec(id), seed: 500 + i });
}
writeFileSync(join(root, 'rules.yml'), 'version: "1"\n');
const stateDir = join(root, 'state');

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const gateway = `http://127.0.0.1:${port}`;
const run = spawn(process.execPath, [BIN, 'run'], {
  env: {
    ...process.env,
    LLAMA_SERVER_BIN: bin,
    MODEL_MOUNT_PATH: root,
    ADAPTERS: 'all',
    CODE_MODEL: 'tiny-qwen2',
    LLM_PORT: String(port),
    LLAMA_CPP_THREADS: '2',
    CODI_STATE_DIR: stateDir,
    PATTERNS_RULES: join(root, 'rules.yml'),
    APP_COMMAND: 'none',
    AIRGAP: 'false',
    LLM_HEALTH_INTERVAL: '0',
    NO_COLOR: '1',
  },
  stdio: ['ignore', 'ignore', 'inherit'],
});
// run with its gateway stands in for itself; run under an init would be another process
for (let i = 0; i < 1200 && !existsSync(join(stateDir, 'environment.json')); i++) await sleep(50);
const env = JSON.parse(readFileSync(join(stateDir, 'environment.json'), 'utf8'));
const upstream = env.gateway.upstream;
const runPid = env.codi_adapter.pid;
const lora = env.gateway.served.map((a) => ({ id: a.index, scale: a.id === 'tiny-a' ? 1 : 0 }));

// llama-server closes every connection after its answer (Connection: close): none is kept, either way
const agent = new Agent({ keepAlive: false, maxSockets: 64 });
function post(base, path, body, onChunk) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const t0 = performance.now();
    const req = request(
      `${base}${path}`,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        res.on('data', (c) => onChunk?.(c));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(performance.now() - t0)
            : reject(new Error(`HTTP ${res.statusCode}`)),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
/** user + system CPU seconds of a process so far (/proc/<pid>/stat, in clock ticks of 10 ms) */
const cpuSeconds = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
/** The llama-servers serving this bench's base: RSS and PSS (shared pages split between sharers), MiB. */
function llamaMemory() {
  const base = join(root, 'base/tiny-qwen2.gguf');
  let rss = 0;
  let pss = 0;
  let count = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/u.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('llama-server') || !cmd.includes(base) || !cmd.includes('/dev/fd/3')) continue;
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      rss += Number(/^Rss:\s+(\d+)/mu.exec(rollup)?.[1] ?? 0) / 1024;
      pss += Number(/^Pss:\s+(\d+)/mu.exec(rollup)?.[1] ?? 0) / 1024;
      count++;
    } catch {
      // gone meanwhile
    }
  }
  return { rss, pss, count };
}
const vmRss = (pid) =>
  Number(/VmRSS:\s+(\d+)/u.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

try {
  // ---- latency
  const single = { prompt: 'def f(x):', n_predict: 1, temperature: 0, cache_prompt: true };
  const direct = [];
  const through = [];
  for (let i = 0; i < 20; i++) {
    await post(upstream, '/completion', { ...single, lora });
    await post(gateway, '/completion', { ...single, model: 'tiny-a' });
  }
  // run's CPU time over requests made directly (it only relays llama-server's log lines) and over
  // requests through the gateway: the difference is the gateway's own cost
  const cpuDirect0 = cpuSeconds(runPid);
  for (let i = 0; i < requests; i++) await post(upstream, '/completion', { ...single, lora });
  const cpuDirect = cpuSeconds(runPid) - cpuDirect0;
  const cpuGateway0 = cpuSeconds(runPid);
  for (let i = 0; i < requests; i++) await post(gateway, '/completion', { ...single, model: 'tiny-a' });
  const cpuGateway = cpuSeconds(runPid) - cpuGateway0;
  for (let i = 0; i < requests; i++) {
    direct.push(await post(upstream, '/completion', { ...single, lora }));
    through.push(await post(gateway, '/completion', { ...single, model: 'tiny-a' }));
  }
  const cpuPerRequest = ((cpuGateway - cpuDirect) / requests) * 1e6;
  const paired = direct.map((d, i) => through[i] - d);
  const p50 = { direct: pct(direct, 50), gateway: pct(through, 50) };
  const p99 = { direct: pct(direct, 99), gateway: pct(through, 99) };
  const added50 = p50.gateway - p50.direct;
  const added99 = p99.gateway - p99.direct;
  console.log(`latency, POST /completion n_predict 1, ${requests} requests each, one at a time, turn about:`);
  console.log(`  direct   p50 ${p50.direct.toFixed(2)} ms  p99 ${p99.direct.toFixed(2)} ms`);
  console.log(`  gateway  p50 ${p50.gateway.toFixed(2)} ms  p99 ${p99.gateway.toFixed(2)} ms`);
  console.log(`  added    p50 ${added50.toFixed(2)} ms (target ≤ 1)  ${verdict(added50 <= 1)}`);
  console.log(`  added    p99 ${added99.toFixed(2)} ms (target ≤ 5)  ${verdict(added99 <= 5)}`);
  console.log(`  (median of the paired differences: ${median(paired).toFixed(2)} ms)`);
  console.log(
    `  the gateway's CPU time per request: ${cpuPerRequest.toFixed(0)} µs (run's user + system time: ${(cpuGateway * 1000).toFixed(0)} ms over ${requests} requests through it, ${(cpuDirect * 1000).toFixed(0)} ms over ${requests} direct ones, relaying llama-server's log)`,
  );
  console.log(
    `  load average while measured: ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')} on ${cpus().length} cores`,
  );

  // ---- streaming throughput and RSS
  const idleRss = vmRss(runPid);
  let peakRss = idleRss;
  const stream = async (base, body) => {
    let tokens = 0;
    const stop = performance.now() + seconds * 1000;
    const client = async () => {
      while (performance.now() < stop) {
        await post(base, '/completion', body, (c) => {
          tokens += (c.toString().match(/^data: /gmu) ?? []).length;
        });
      }
    };
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, vmRss(runPid))), 100);
    const t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, client));
    clearInterval(sampler);
    return tokens / ((performance.now() - t0) / 1000);
  };
  const streamBody = { prompt: 'def fibonacci(n):', n_predict: 32, stream: true, temperature: 0 };
  const tps = { direct: [], gateway: [] };
  for (let r = 0; r < rounds; r++) {
    tps.direct.push(await stream(upstream, { ...streamBody, lora }));
    tps.gateway.push(await stream(gateway, { ...streamBody, model: 'tiny-a' }));
  }
  const ratio = median(tps.gateway) / median(tps.direct);
  console.log(
    `streaming, 16 clients, ${seconds} s a round, ${rounds} rounds each, turn about (events per second):`,
  );
  console.log(
    `  direct   ${tps.direct.map((x) => x.toFixed(0)).join(', ')}  median ${median(tps.direct).toFixed(0)}`,
  );
  console.log(
    `  gateway  ${tps.gateway.map((x) => x.toFixed(0)).join(', ')}  median ${median(tps.gateway).toFixed(0)}`,
  );
  console.log(`  gateway / direct ${ratio.toFixed(3)} (target ≥ 0.97)  ${verdict(ratio >= 0.97)}`);
  console.log(
    `RSS of run (the gateway is in its process): idle ${idleRss.toFixed(1)} MiB, peak under the streaming load ${peakRss.toFixed(1)} MiB, growth ${(peakRss - idleRss).toFixed(1)} MiB (target ≤ 80)  ${verdict(peakRss - idleRss <= 80)}; the whole process ${verdict(peakRss <= 80)} against 80`,
  );

  // ---- reload against a cold start
  const cold = [];
  for (let i = 0; i < reloads; i++) {
    const p = await freePort();
    const t0 = performance.now();
    const child = spawn(
      bin,
      [
        '-m',
        join(root, 'base/tiny-qwen2.gguf'),
        ...env.gateway.served.flatMap((a) => ['--lora', a.gguf]),
        '--lora-init-without-apply',
        '--host',
        '127.0.0.1',
        '--port',
        String(p),
        '-t',
        '2',
        '--metrics',
        '--no-webui',
        '--offline',
      ],
      { stdio: 'ignore' },
    );
    for (;;) {
      const ok = await new Promise((resolve) => {
        const req = request(`http://127.0.0.1:${p}/health`, (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        });
        req.on('error', () => resolve(false));
        req.end();
      });
      if (ok) break;
      await sleep(5);
    }
    cold.push(performance.now() - t0);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  const reloadMs = [];
  const one = llamaMemory();
  let two = one;
  const memSampler = setInterval(() => {
    const m = llamaMemory();
    if (m.count > 1 && m.rss > two.rss) two = m;
  }, 20);
  for (let i = 0; i < reloads; i++) {
    const before = existsSync(join(stateDir, 'reload.json'))
      ? JSON.parse(readFileSync(join(stateDir, 'reload.json'), 'utf8')).seq
      : 0;
    const t0 = performance.now();
    process.kill(runPid, 'SIGHUP');
    for (;;) {
      const now = existsSync(join(stateDir, 'reload.json'))
        ? JSON.parse(readFileSync(join(stateDir, 'reload.json'), 'utf8'))
        : { seq: 0 };
      if (now.seq > before) {
        if (now.outcome !== 'switched') throw new Error(`reload ${now.outcome}: ${now.message}`);
        break;
      }
      await sleep(5);
    }
    reloadMs.push(performance.now() - t0);
    await sleep(300);
  }
  clearInterval(memSampler);
  const margin = median(reloadMs) - median(cold);
  console.log(`reload, SIGHUP to the new set serving, ${reloads} each:`);
  console.log(
    `  llama-server cold start  ${cold.map((x) => x.toFixed(0)).join(', ')} ms  median ${median(cold).toFixed(0)} ms`,
  );
  console.log(
    `  reload                   ${reloadMs.map((x) => x.toFixed(0)).join(', ')} ms  median ${median(reloadMs).toFixed(0)} ms`,
  );
  console.log(`  reload − cold start ${margin.toFixed(0)} ms (target ≤ 1000)  ${verdict(margin <= 1000)}`);
  console.log(
    `memory of llama-server, one serving: RSS ${one.rss.toFixed(1)} MiB, PSS ${one.pss.toFixed(1)} MiB; peak while two run (${two.count} seen): RSS ${two.rss.toFixed(1)} MiB summed, PSS ${two.pss.toFixed(1)} MiB (the base's pages shared count once in PSS)`,
  );
} finally {
  agent.destroy();
  run.kill('SIGTERM');
  await new Promise((r) => run.once('exit', r));
  rmSync(root, { recursive: true, force: true });
}
