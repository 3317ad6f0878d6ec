#!/usr/bin/env node
// The base model's identity: `verify --base` of an adapter bound to a 3 GiB base, with the base's
// sha256 computed (an empty state directory: a container's first start) and taken from the state
// directory's cache (every later start), against `openssl dgst -sha256` of the base, and against
// `verify --base` of an adapter that records no base (nothing to hash). Targets: the first check
// ≤ 1.25× openssl (one streamed hash, as verify's own), the cached one ≤ 0.1× openssl and ≤ 1.5× the
// unbound one (the cache costs next to nothing).
// Usage: node bench/base-hash.js [--size-gib 3] [--trials 3] [--keep]
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, compare, measure, requireBuilt, verdict } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeGiB = arg('--size-gib', 3);
const trials = arg('--trials', 3);

const { writeGguf } = await import('../dist/files/gguf-writer.js');
const { tinyModelTensors, tinyModelWeights } = await import('../dist/testkit/tiny-model.js');
const { GgmlType, gv } = await import('../dist/formats/ggml-types.js');
const { readGgufHeader } = await import('../dist/files/gguf.js');
const { exampleSpec } = await import('../dist/testkit/examples.js');
const { writePeftAdapter } = await import('../dist/testkit/peft-adapter.js');

const root = mkdtempSync(join(tmpdir(), 'codi-bench-base-'));
const base = join(root, 'base.gguf');
console.log(`generating a ${sizeGiB} GiB base model GGUF in ${base}`);
// the tiny model, plus a tensor that only makes the file as large as a real base (the check reads
// the header and hashes the whole file; the tensor's contents do not matter)
const tiny = join(root, 'tiny.gguf');
const { writeTinyModel } = await import('../dist/testkit/tiny-model.js');
await writeTinyModel(tiny);
const header = await readGgufHeader(tiny);
const weights = new Map([...tinyModelWeights()].map(([t, data]) => [t.name, data]));
const CHUNK = 64 * 1024 * 1024;
const padding = Math.round((sizeGiB * 1024 ** 3) / CHUNK) * (CHUNK / 4);
const tensors = [
  ...tinyModelTensors().map((t) => ({ name: t.name, ne: t.ne, type: t.type })),
  { name: 'codi.bench.padding', ne: [padding], type: GgmlType.F32 },
];
function* paddingChunks() {
  const chunk = new Uint8Array(CHUNK);
  for (let done = 0; done < padding * 4; done += CHUNK) {
    chunk[0] = done / CHUNK;
    yield chunk;
  }
}
await writeGguf(
  base,
  {
    metadata: [
      ...[...header.metadata.values()].map((kv) => [kv.key, { type: kv.type, value: kv.value }]),
      ['codi.bench.note', gv.str('padding to a real base size')],
    ],
    tensors,
  },
  (spec) => (spec.name === 'codi.bench.padding' ? paddingChunks() : weights.get(spec.name)),
);
const sha256 = await new Promise((resolve, reject) => {
  const h = createHash('sha256');
  createReadStream(base)
    .on('data', (d) => h.update(d))
    .on('end', () => resolve(h.digest('hex')))
    .on('error', reject);
});
const bound = join(root, 'bound');
await writePeftAdapter(bound, { ...exampleSpec('bound'), base: { sha256 } });
const unbound = join(root, 'unbound');
await writePeftAdapter(unbound, exampleSpec('unbound'));

let cold = 0;
const verifyBound = (stateDir) =>
  measure(process.execPath, [BIN, 'verify', bound, '--base', base, '--json'], {
    env: { ...process.env, CODI_STATE_DIR: stateDir },
  });
const warmState = join(root, 'state-warm');
// warm the page cache for every side, and the state directory for the cached side
measure('openssl', ['dgst', '-sha256', base]);
verifyBound(warmState);
const res = compare(trials, {
  openssl: () => measure('openssl', ['dgst', '-sha256', base]),
  first: () => verifyBound(join(root, `state-cold-${++cold}`)),
  cached: () => verifyBound(warmState),
  unbound: () =>
    measure(process.execPath, [BIN, 'verify', unbound, '--base', base, '--json'], {
      env: { ...process.env, CODI_STATE_DIR: warmState },
    }),
});

const first = res.first.wall / res.openssl.wall;
const cached = res.cached.wall / res.openssl.wall;
const overhead = res.cached.wall / res.unbound.wall;
console.log('');
console.log(`base ${sizeGiB} GiB, medians of ${trials}:`);
console.log(`openssl dgst -sha256:              ${res.openssl.wall.toFixed(3)} s`);
console.log(
  `verify --base, hashing the base:   ${res.first.wall.toFixed(3)} s, peak RSS ${res.first.rssMiB.toFixed(1)} MiB`,
);
console.log(`verify --base, hash from cache:    ${res.cached.wall.toFixed(3)} s`);
console.log(`verify --base, no base recorded:   ${res.unbound.wall.toFixed(3)} s`);
console.log(`ratio first/openssl = ${first.toFixed(3)} (target ≤ 1.25) ${verdict(first <= 1.25)}`);
console.log(`ratio cached/openssl = ${cached.toFixed(3)} (target ≤ 0.1) ${verdict(cached <= 0.1)}`);
console.log(`ratio cached/unbound = ${overhead.toFixed(3)} (target ≤ 1.5) ${verdict(overhead <= 1.5)}`);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
