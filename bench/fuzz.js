#!/usr/bin/env node
// A fuzz campaign over the three parsers of hostile weights: the safetensors header parser, the zip
// reader (with the torch archive checks on top) and the pickle scanner. Seeds are genuine torch.save
// files (test/fixtures/torch), the testkit's writers and the hostile files of every attack class;
// each input is a seed mutated a few times (bytes flipped, set to edge values, inserted, deleted,
// duplicated, spliced from another seed, cut short). Pass: no throw other than the project's own
// FormatError, and no input over 1 s. Prints the counts, outcomes and times.
// Usage: node bench/fuzz.js [--count 1200000] [--seed 1]
import { Buffer } from 'node:buffer';
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { FormatError } from '../dist/formats/format-error.js';
import { scanPickle } from '../dist/formats/pickle.js';
import { encodeSafetensors, parseSafetensorsHeader } from '../dist/formats/safetensors.js';
import { scanTorchBinBytes } from '../dist/formats/torch-bin.js';
import { ZipArchive } from '../dist/formats/zip.js';
import { torchAttacks } from '../dist/testkit/torch-attacks.js';
import {
  maliciousPickle,
  MALICIOUS_PICKLE_KINDS,
  torchBinBytes,
  torchDataPickle,
} from '../dist/testkit/torch-bin.js';
import { requireBuilt } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const total = arg('--count', 1_200_000);
const LIMIT_MS = 1000;

// xorshift32: the same inputs on every run with the same --seed
let state = arg('--seed', 1) >>> 0 || 1;
const rand = () => {
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state;
};
const below = (n) => rand() % Math.max(1, n);
const EDGES = [0, 1, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0x28, 0x2e, 0x50, 0x4b, 0x95, 0x22, 0x7b, 0x7d, 0x30];

function mutate(seed, seeds) {
  let b = seed.slice();
  const edits = 1 + below(4);
  for (let k = 0; k < edits; k++) {
    const at = below(b.length + 1);
    switch (below(8)) {
      case 0: // flip a bit
        if (b.length) b[at % b.length] ^= 1 << below(8);
        break;
      case 1: // an edge value
        if (b.length) b[at % b.length] = EDGES[below(EDGES.length)];
        break;
      case 2: // a random byte
        if (b.length) b[at % b.length] = below(256);
        break;
      case 3: // insert bytes
        b = concat(b.subarray(0, at), randomBytes(1 + below(8)), b.subarray(at));
        break;
      case 4: // delete a run
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + below(16))));
        break;
      case 5: // duplicate a run
        b = concat(b.subarray(0, at), b.subarray(at, at + 1 + below(64)), b.subarray(at));
        break;
      case 6: {
        // splice in a piece of another seed
        const other = seeds[below(seeds.length)];
        const from = below(other.length);
        b = concat(b.subarray(0, at), other.subarray(from, from + 1 + below(128)), b.subarray(at));
        break;
      }
      default: // cut short
        b = b.subarray(0, at);
    }
  }
  return b;
}

function concat(...parts) {
  return new Uint8Array(Buffer.concat(parts));
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = below(256);
  return out;
}

// --- seeds

const FIXTURES = fileURLToPath(new URL('../test/fixtures/torch/', import.meta.url));
const genuine = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.bin'))
  .map((f) => new Uint8Array(readFileSync(FIXTURES + f)));
const tensors = (n, dtype) =>
  Array.from({ length: n }, (_, i) => ({
    name: `base_model.model.layers.${i}.q_proj.lora_A.weight`,
    dtype,
    shape: [2, 3],
    data: new Uint8Array(6 * (dtype === 'F32' ? 4 : 2)).map((_, j) => (i * 7 + j) & 0xff),
  }));
const attacks = torchAttacks().map((a) => a.bytes);
const binSeeds = [
  ...genuine.filter((b) => b[0] === 0x50),
  torchBinBytes(tensors(3, 'F16')),
  torchBinBytes(tensors(2, 'F32'), { zip64: true }),
  ...attacks,
];
const pickleSeeds = [
  torchDataPickle(tensors(3, 'F32')),
  torchDataPickle(tensors(3, 'BF16'), { protocol: 4, container: 'dict' }),
  ...MALICIOUS_PICKLE_KINDS.map((k) => maliciousPickle(k).bytes),
];
for (const bin of binSeeds) {
  try {
    const zip = await ZipArchive.fromBytes(bin);
    const pkl = zip.entries.find((e) => e.name.endsWith('.pkl'));
    if (pkl) pickleSeeds.push(await zip.read(pkl));
  } catch {
    // a hostile archive: its pickle is not a seed
  }
}
const f32 = (n) => ({ dtype: 'F32', shape: [n], data: new Uint8Array(n * 4) });
const safetensorsSeeds = [
  encodeSafetensors([
    { name: 'a.lora_A.weight', ...f32(4) },
    { name: 'a.lora_B.weight', ...f32(2) },
  ]),
  encodeSafetensors([{ name: 'x', dtype: 'BF16', shape: [2, 2], data: new Uint8Array(8) }], { format: 'pt' }),
  encodeSafetensors(
    Array.from({ length: 24 }, (_, i) => ({
      name: `base_model.model.layers.${i}.v_proj.lora_B.weight`,
      ...f32(i % 5),
    })),
    { format: 'pt', 'peft.version': '0.13.2' },
  ),
];

// --- targets

const targets = [
  {
    name: 'pickle scanner',
    seeds: pickleSeeds,
    run: (b) => scanPickle(b),
  },
  {
    name: 'zip reader + torch archive',
    seeds: binSeeds,
    run: (b) => scanTorchBinBytes(b),
  },
  {
    name: 'safetensors header',
    seeds: safetensorsSeeds,
    // the header prefix and the size of the whole file, as the file reader passes them
    run: (b) => parseSafetensorsHeader(b.subarray(0, Math.min(b.length, 1 << 20)), b.length),
  },
];

let failures = 0;
const started = performance.now();
for (const target of targets) {
  const count = Math.floor(total / targets.length);
  const outcomes = new Map();
  let slowest = 0;
  let overLimit = 0;
  let foreign = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const input = mutate(target.seeds[below(target.seeds.length)], target.seeds);
    const s = performance.now();
    let outcome = 'accepted';
    try {
      await target.run(input);
    } catch (err) {
      if (err instanceof FormatError) {
        outcome = err.code;
      } else {
        foreign++;
        if (foreign <= 3) {
          console.error(`${target.name}: a throw that is not a FormatError:`, err);
          console.error(`  input (base64): ${Buffer.from(input).toString('base64').slice(0, 2000)}`);
        }
      }
    }
    const ms = performance.now() - s;
    if (ms > slowest) slowest = ms;
    if (ms > LIMIT_MS) overLimit++;
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  const seconds = (performance.now() - t0) / 1000;
  const top = [...outcomes.entries()].sort((a, b) => b[1] - a[1]);
  console.log(
    `${target.name}: ${count.toLocaleString('en')} inputs from ${target.seeds.length} seeds in ${seconds.toFixed(1)} s (${Math.round(count / seconds).toLocaleString('en')}/s); slowest ${slowest.toFixed(1)} ms; over ${LIMIT_MS} ms: ${overLimit}; throws other than FormatError: ${foreign}`,
  );
  console.log(`  outcomes: ${top.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  failures += foreign + overLimit;
}
const all = Math.floor(total / targets.length) * targets.length;
console.log(
  `fuzz: ${all.toLocaleString('en')} inputs in ${((performance.now() - started) / 1000).toFixed(1)} s; ${failures === 0 ? 'PASS' : `FAIL (${failures})`}: no throw but FormatError, no input over ${LIMIT_MS} ms`,
);
process.exit(failures === 0 ? 0 : 1);
