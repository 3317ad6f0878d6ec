// `codi-adapter promote` against `codi-adapter verify` of the same adapter (target: at most 3×).
//
//   npm run build && node bench/promote.js
//
// promote = verify (hashing every covered file) + eval.json schema + gates + a minimal edit of
// rules.yml under its lock + the metadata.json append, each file written atomically (fsync). Every
// timed promote is a real one: rules.yml and metadata.json are reset before each run (not timed).
// Two adapters: the bundled tiny example, and one shaped like the production adapter
// (qwen2.5-coder-1.5b, r=16 on all projections of 28 layers, BF16: 392 tensors, 37 MB).
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, qwen15bAdapterSpec, REPO } from './lib.js';

const RUNS = 5;
// every scenario whose target was missed; the exit status says so after all figures are printed
const missed = [];

const { writePeftAdapter } = await import(join(REPO, 'dist', 'testkit', 'peft-adapter.js'));
const { exampleSpec } = await import(join(REPO, 'dist', 'testkit', 'examples.js'));

function run(args) {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return { ms, stdout: r.stdout };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(args, before) {
  await before?.();
  run(args); // warm-up: page cache, module cache
  const samples = [];
  for (let i = 0; i < RUNS; i++) {
    await before?.();
    samples.push(run(args).ms);
  }
  return { median: median(samples), min: Math.min(...samples) };
}

const fmt = (x) => `${x.median.toFixed(0).padStart(5)} ms (min ${x.min.toFixed(0)})`;

async function scenario(name, dir, work, baseModel) {
  const rules = join(work, 'rules.yml');
  const rulesText = (await readFile(join(REPO, 'examples', 'patterns', 'rules.yml'), 'utf8')).replace(
    'base_model: tiny-qwen2',
    `base_model: ${baseModel}`,
  );
  const evalPath = join(work, 'eval.json');
  const evalData = JSON.parse(await readFile(join(REPO, 'examples', 'eval.json'), 'utf8'));
  await writeFile(evalPath, JSON.stringify({ ...evalData, base_model: baseModel }));
  const metadataPath = join(dir, 'metadata.json');
  const metadataText = await readFile(metadataPath, 'utf8');
  const reset = async () => {
    await writeFile(rules, rulesText);
    await writeFile(metadataPath, metadataText);
  };

  const verify = await timed(['verify', dir, '--json']);
  const promote = await timed(['promote', dir, '--rules', rules, '--eval', evalPath, '--json'], reset);
  const dry = await timed(
    ['promote', dir, '--rules', rules, '--eval', evalPath, '--dry-run', '--json'],
    reset,
  );
  const again = await timed(['promote', dir, '--rules', rules, '--eval', evalPath, '--json']);
  const ratio = promote.median / verify.median;
  if (ratio > 3) missed.push(`${name}: promote ${ratio.toFixed(2)}× verify > 3×`);
  console.log(`\n${name}`);
  console.log(`  verify                      ${fmt(verify)}`);
  console.log(
    `  promote                     ${fmt(promote)}   ${ratio.toFixed(2)}× verify, target ≤ 3×: ${ratio <= 3 ? 'met' : 'MISSED'}`,
  );
  console.log(`  promote --dry-run           ${fmt(dry)}   ${(dry.median / verify.median).toFixed(2)}×`);
  console.log(`  promote, already promoted   ${fmt(again)}   ${(again.median / verify.median).toFixed(2)}×`);
}

const work = await mkdtemp(join(tmpdir(), 'codi-bench-promote-'));
try {
  console.log(`wall time of the built CLI, median of ${RUNS} runs after a warm-up`);
  const tiny = join(work, 'tiny-qwen2-lora');
  await writePeftAdapter(tiny, exampleSpec());
  await scenario('tiny example adapter (69 KB)', tiny, work, 'tiny-qwen2');

  const prod = join(work, 'qwen15b-lora-bench');
  await writePeftAdapter(prod, await qwen15bAdapterSpec('qwen15b-lora-bench', { dtype: 'BF16' }));
  await scenario(
    'production-shaped adapter (qwen2.5-coder-1.5b r=16 BF16, 392 tensors, 37 MB)',
    prod,
    work,
    'qwen2.5-coder-1.5b',
  );
  const load = (await readFile('/proc/loadavg', 'utf8').catch(() => '?')).trim();
  console.log(`\nload average ${load} on ${cpus().length} CPUs`);
} finally {
  await rm(work, { recursive: true, force: true });
}
if (missed.length > 0) {
  console.error(`\ntarget MISSED: ${missed.join('; ')}`);
  process.exitCode = 1;
}
