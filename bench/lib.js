// Shared helpers for the on-demand benchmarks: run a command several times, read wall time and peak
// RSS from GNU time, report medians and ratios against a reference measured in the same run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../', import.meta.url));
export const BIN = fileURLToPath(new URL('../bin/run.js', import.meta.url));

export function requireBuilt() {
  if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
    console.error('bench: run `npm run build` first');
    process.exit(3);
  }
  if (!existsSync('/usr/bin/time')) {
    console.error('bench: GNU time (/usr/bin/time) is needed for peak RSS: apt-get install time');
    process.exit(3);
  }
}

/** Runs `cmd args` under /usr/bin/time -v; returns wall seconds and peak RSS in MiB. */
export function measure(cmd, args, options = {}) {
  const started = process.hrtime.bigint();
  // the wall clock of bash's `time` (milliseconds; GNU time's is in centiseconds, too coarse for a
  // 40 ms reference), taken in a small process: a parent with a large heap spawns slowly, which is
  // not the child's cost; GNU time reports the peak RSS
  const r = spawnSync(
    'bash',
    [
      '-c',
      'TIMEFORMAT="CODI_BENCH_WALL %3R"; time /usr/bin/time -f "CODI_BENCH_MAXRSS %M" "$@"',
      'bash',
      cmd,
      ...args,
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options },
  );
  const elapsed = [...r.stderr.matchAll(/^CODI_BENCH_WALL ([\d.]+)$/gmu)].pop();
  const wall = elapsed ? Number(elapsed[1]) : Number(process.hrtime.bigint() - started) / 1e9;
  const rss = [...r.stderr.matchAll(/^CODI_BENCH_MAXRSS (\d+)$/gmu)].pop();
  if (options.expectStatus !== undefined ? r.status !== options.expectStatus : r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  }
  return { wall, rssMiB: rss ? Number(rss[1]) / 1024 : NaN, stdout: r.stdout };
}

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Alternates the commands `trials` times (so both see the same machine state); medians. Before each
 * run, `sync` (untimed) writes back what the previous one left dirty: `cp` leaves its 74 MB for the
 * kernel to write later, which would otherwise land in the next command's time.
 */
export function compare(trials, commands) {
  const results = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let i = 0; i < trials; i++) {
    for (const [name, run] of Object.entries(commands)) {
      spawnSync('sync');
      results[name].push(run());
    }
  }
  return Object.fromEntries(
    Object.entries(results).map(([k, rs]) => [
      k,
      {
        wall: median(rs.map((r) => r.wall)),
        rssMiB: Math.max(...rs.map((r) => r.rssMiB)),
        all: rs.map((r) => r.wall),
      },
    ]),
  );
}

export function verdict(ok) {
  return ok ? 'PASS' : 'FAIL';
}

/** Qwen2.5-1.5B's projection shapes: what a production adapter for qwen2.5-coder-1.5b adapts. */
export const QWEN15B_DIMS = { layers: 28, hidden: 1536, intermediate: 8960, kvDim: 256 };

/** A Qwen2.5-1.5B-shaped PEFT adapter (r 16, all 7 projections, 392 tensors), for writePeftAdapter. */
export async function qwen15bAdapterSpec(id, extra = {}) {
  const { ALL_PROJECTIONS, decoderTargets } = await import('../dist/testkit/peft-adapter.js');
  return {
    id,
    version: '0.1.0',
    baseModel: 'qwen2.5-coder-1.5b',
    r: 16,
    alpha: 32,
    targetModules: ALL_PROJECTIONS,
    modules: decoderTargets(QWEN15B_DIMS),
    seed: 7,
    ...extra,
  };
}
