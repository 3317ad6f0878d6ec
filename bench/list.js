// `codi-adapter list` over 1,000 adapters (target: at most 1 s), against `find`/`ls -R` over the same tree.
//
//   npm run build && node bench/list.js [count]
//
// Two catalogs of `count` (default 1,000) adapters, each with its own metadata.json (id, version):
//   tiny        the bundled example (28 tensors, 69 KB of weights; the copies are real files);
//   production  shaped like the production adapter: qwen2.5-coder-1.5b, r=16 on all seven projections
//               of 28 layers = 392 tensors, a ~50 KB safetensors header. The 74 MB weights file is
//               hard-linked into every folder (list reads only its header, so the figure is the same).
// list reads the layout, adapter_config.json, the safetensors header and metadata.json of every adapter
// and hashes nothing (that is --verify).
import { spawnSync } from 'node:child_process';
import { chmod, copyFile, link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, qwen15bAdapterSpec, REPO } from './lib.js';

// every scenario whose target was missed; the exit status says so after all figures are printed
const missed = [];

const COUNT = Number(process.argv[2] ?? 1000);
const RUNS = 5;
const TIME = spawnSync('/usr/bin/time', ['-f', '%U', 'true']).status === 0 ? '/usr/bin/time' : null;

const { writePeftAdapter } = await import(join(REPO, 'dist', 'testkit', 'peft-adapter.js'));
const { exampleSpec } = await import(join(REPO, 'dist', 'testkit', 'examples.js'));

/** Wall time, and the child's CPU time (user + system) from /usr/bin/time when it is there. */
function run(cmd, args) {
  const [file, argv] = TIME ? [TIME, ['-f', '%U %S', cmd, ...args]] : [cmd, args];
  const t = process.hrtime.bigint();
  const r = spawnSync(file, argv, {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, NO_COLOR: '1' },
  });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  let cpu = NaN;
  if (TIME) {
    const [u, s] = (r.stderr.trim().split('\n').pop() ?? '').split(' ').map(Number);
    cpu = (u + s) * 1000;
  }
  return { ms, cpu, stdout: r.stdout };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function measure(cmd, args) {
  run(cmd, args); // warm the page cache and the module cache
  const runs = Array.from({ length: RUNS }, () => run(cmd, args));
  return {
    median: median(runs.map((r) => r.ms)),
    min: Math.min(...runs.map((r) => r.ms)),
    cpu: median(runs.map((r) => r.cpu)),
  };
}

const fmt = (x) =>
  `${x.median.toFixed(0).padStart(5)} ms (min ${x.min.toFixed(0)}${Number.isNaN(x.cpu) ? '' : `, CPU ${x.cpu.toFixed(0)}`})`;

/** `count` adapters under `<root>/adapters`, made from the adapter in `template`. */
async function catalog(root, template, linkWeights) {
  const metadata = JSON.parse(await readFile(join(template, 'metadata.json'), 'utf8'));
  for (let i = 0; i < COUNT; i++) {
    const id = `adapter-${String(i).padStart(4, '0')}`;
    const dir = join(root, 'adapters', id);
    await mkdir(dir, { recursive: true });
    for (const f of ['adapter_config.json', 'README.md']) await copyFile(join(template, f), join(dir, f));
    const weights = join(template, 'adapter_model.safetensors');
    if (linkWeights) await link(weights, join(dir, 'adapter_model.safetensors'));
    else await copyFile(weights, join(dir, 'adapter_model.safetensors'));
    await writeFile(
      join(dir, 'metadata.json'),
      `${JSON.stringify({ ...metadata, id, version: `1.${i}.0` }, null, 2)}\n`,
    );
  }
}

async function scenario(name, root) {
  const adapters = join(root, 'adapters');
  const json = JSON.parse(run(process.execPath, [BIN, 'list', '--root', root, '--json']).stdout);
  const mounted = json.adapters.filter((a) => a.status === 'mounted').length;
  if (json.adapters.length !== COUNT || mounted !== COUNT)
    throw new Error(`list saw ${json.adapters.length}, ${mounted} mounted`);
  const list = measure(process.execPath, [BIN, 'list', '--root', root]);
  const listJson = measure(process.execPath, [BIN, 'list', '--root', root, '--json']);
  const lsR = measure('ls', ['-lR', adapters]);
  const findRead = measure('sh', ['-c', `find ${adapters} -name metadata.json -exec cat {} + > /dev/null`]);
  console.log(`\n${name}: ${COUNT} adapters`);
  const met = list.median <= 1000;
  if (!met) missed.push(`${name}: list ${list.median.toFixed(0)} ms > 1000 ms`);
  console.log(`  codi-adapter list           ${fmt(list)}   target ≤ 1000 ms: ${met ? 'met' : 'MISSED'}`);
  console.log(`  codi-adapter list --json    ${fmt(listJson)}`);
  console.log(`  ls -lR                      ${fmt(lsR)}`);
  console.log(`  find + cat metadata.json    ${fmt(findRead)}`);
  console.log(
    `  list / ls -lR = ${(list.median / lsR.median).toFixed(1)}×;  list / (find + cat) = ${(list.median / findRead.median).toFixed(1)}×`,
  );
  return list;
}

const base = await mkdtemp(join(tmpdir(), 'codi-bench-list-'));
// mkdtemp makes it 0700: list would rightly report that UID 1000 cannot reach any adapter below it
await chmod(base, 0o755);
try {
  const empty = join(base, 'empty');
  await mkdir(empty);
  console.log(`wall time, median of ${RUNS} runs after a warm-up; CPU = user + system of the process, ms`);
  const startup = measure(process.execPath, [BIN, 'list', '--root', empty]);
  console.log(`  start-up: codi-adapter list of an empty volume  ${fmt(startup)}`);

  const tiny = join(base, 'tiny');
  await writePeftAdapter(join(base, 't'), exampleSpec('template'));
  await catalog(tiny, join(base, 't'), false);
  const t = await scenario('tiny (bundled example, 28 tensors)', tiny);
  console.log(`  minus start-up: ${((t.median - startup.median) / COUNT).toFixed(2)} ms per adapter`);
  await rm(tiny, { recursive: true });

  const prod = join(base, 'prod');
  await writePeftAdapter(
    join(base, 'p'),
    await qwen15bAdapterSpec('template', { dtype: 'BF16', readme: '# template\n' }),
  );
  await catalog(prod, join(base, 'p'), true);
  const p = await scenario('production-shaped (qwen2.5-coder-1.5b r=16, 392 tensors, ~50 KB header)', prod);
  console.log(`  minus start-up: ${((p.median - startup.median) / COUNT).toFixed(2)} ms per adapter`);

  const load = (await readFile('/proc/loadavg', 'utf8').catch(() => '?')).trim();
  console.log(
    `\nload average ${load} on ${cpus().length} CPUs (other work on the machine inflates wall time)`,
  );
} finally {
  await rm(base, { recursive: true, force: true });
}
if (missed.length > 0) {
  console.error(`\ntarget MISSED: ${missed.join('; ')}`);
  process.exitCode = 1;
}
