#!/usr/bin/env node
// What proving a cached GGUF costs at start: before serving a cached entry, `run` verifies the
// adapter and compares every byte of the entry with the conversion it re-derives in the same pass
// (src/convert.ts; `run` calls the same code as `convert`). Measured through `convert` with the entry
// in CODI_GGUF_CACHE, on Qwen2.5-1.5B-shaped adapters of 74 MB (r 16) and ~600 MB (r 128), against,
// in the same run:
//   - verify: what the start always cost (the sha256 of every file), the proof's floor in work;
//   - convert --force: what rebuilding the entry costs (the alternative to a proof: convert anew);
//   - sha256sum of the weights + cmp of the entry with a copy of it: a plain-tool floor of reading both.
// The cost of the proof is convert (cache hit) − verify. No targets: figures to report.
// Usage: node bench/gguf-proof.js [--trials 3] [--keep]
import { copyFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writePeftAdapter } from '../dist/testkit/peft-adapter.js';
import { BIN, compare, measure, qwen15bAdapterSpec, requireBuilt, writeQwen15bShapesBase } from './lib.js';

requireBuilt();
const trialsArg = process.argv.indexOf('--trials');
const trials = trialsArg > 0 ? Number(process.argv[trialsArg + 1]) : 3;

const root = mkdtempSync(join(tmpdir(), 'codi-bench-proof-'));
const base = join(root, 'qwen2.5-1.5b-shapes.gguf');
console.log(`generating a sparse base and two adapters in ${root}`);
await writeQwen15bShapesBase(base);

const mb = (bytes) => (bytes / 1e6).toFixed(0);
const ms = (s) => `${(s * 1000).toFixed(0)} ms`;

for (const r of [16, 128]) {
  const adapter = join(root, `qwen15b-lora-r${r}`);
  await writePeftAdapter(adapter, await qwen15bAdapterSpec(`qwen15b-lora-r${r}`, { r, alpha: 2 * r }));
  const weights = join(adapter, 'adapter_model.safetensors');
  const cache = join(root, `cache-r${r}`);
  const env = { ...process.env, CODI_GGUF_CACHE: cache };
  // the entry, and a warm page cache
  measure(process.execPath, [BIN, 'convert', adapter, '--base', base], { env });
  const entry = join(
    cache,
    readdirSync(cache).find((f) => f.endsWith('.gguf')),
  );
  const copy = join(root, `copy-r${r}.gguf`);
  copyFileSync(entry, copy);

  const hit = () => {
    const m = measure(process.execPath, [BIN, 'convert', adapter, '--base', base], { env });
    if (!/Cached /u.test(m.stdout)) throw new Error(`convert did not use the cached entry:\n${m.stdout}`);
    return m;
  };
  const res = compare(trials, {
    version: () => measure(process.execPath, [BIN, '--version']),
    verify: () => measure(process.execPath, [BIN, 'verify', adapter]),
    proof: hit,
    rebuild: () => measure(process.execPath, [BIN, 'convert', adapter, '--base', base, '--force'], { env }),
    tools: () =>
      measure('bash', ['-c', 'sha256sum "$1" >/dev/null && cmp "$2" "$3"', 'bash', weights, entry, copy]),
  });
  const cost = res.proof.wall - res.verify.wall;
  console.log('');
  console.log(
    `r ${r}: weights ${mb(statSync(weights).size)} MB, GGUF ${mb(statSync(entry).size)} MB (medians of ${trials})`,
  );
  console.log(`  verify (sha256 only, the start without a proof): ${ms(res.verify.wall)}`);
  console.log(
    `  convert, cached entry proven byte for byte:       ${ms(res.proof.wall)}, peak RSS ${res.proof.rssMiB.toFixed(0)} MiB`,
  );
  console.log(
    `  the proof costs at start:                         ${ms(cost)} = ${(cost / res.verify.wall).toFixed(2)}× verify`,
  );
  console.log(`  convert --force (rebuilding the entry instead):   ${ms(res.rebuild.wall)}`);
  console.log(`  sha256sum weights + cmp of the GGUF (tools):      ${ms(res.tools.wall)}`);
  console.log(`  (start-up alone, --version: ${ms(res.version.wall)})`);
  rmSync(adapter, { recursive: true, force: true });
  rmSync(cache, { recursive: true, force: true });
  rmSync(copy, { force: true });
}
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
