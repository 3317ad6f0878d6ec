#!/usr/bin/env node
// verify on a generated 2 GiB adapter against `openssl dgst -sha256` over the same files.
// Targets: wall ≤ 1.15× openssl, peak RSS ≤ 100 MiB. Also `codi-adapter --version` against
// `node -e 0`: ≤ 3×. Usage: node bench/verify.js [--size-gib 2] [--trials 3] [--keep]
import { Buffer } from 'node:buffer';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtempSync, openSync, rmSync, writeSync, closeSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, compare, measure, requireBuilt, verdict } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeGiB = arg('--size-gib', 2);
const trials = arg('--trials', 3);

// q_proj LoRAs of r=256 on 8192-wide layers: 16 MiB per layer (F32 A + B)
const r = 256;
const width = 8192;
const perTensor = r * width * 4;
const layers = Math.round((sizeGiB * 1024 ** 3) / (2 * perTensor));

const root = mkdtempSync(join(tmpdir(), 'codi-bench-verify-'));
const dir = join(root, 'bench-adapter');
mkdirSync(dir);
console.log(
  `generating a ${((layers * 2 * perTensor) / 1024 ** 3).toFixed(2)} GiB adapter (${layers} layers) in ${dir}`,
);

const header = {};
let offset = 0;
for (let l = 0; l < layers; l++) {
  const p = `base_model.model.model.layers.${l}.self_attn.q_proj`;
  header[`${p}.lora_A.weight`] = {
    dtype: 'F32',
    shape: [r, width],
    data_offsets: [offset, offset + perTensor],
  };
  offset += perTensor;
  header[`${p}.lora_B.weight`] = {
    dtype: 'F32',
    shape: [width, r],
    data_offsets: [offset, offset + perTensor],
  };
  offset += perTensor;
}
let json = JSON.stringify(header);
json += ' '.repeat((8 - (json.length % 8)) % 8);
const prefix = Buffer.alloc(8 + json.length);
prefix.writeBigUInt64LE(BigInt(json.length), 0);
prefix.write(json, 8, 'utf8');
const weights = join(dir, 'adapter_model.safetensors');
const hash = createHash('sha256').update(prefix);
const fd = openSync(weights, 'w');
writeSync(fd, prefix);
const block = Buffer.alloc(perTensor);
for (let i = 0; i < layers * 2; i++) {
  randomFillSync(block, 0, 4096);
  hash.update(block);
  writeSync(fd, block);
}
closeSync(fd);
const config = JSON.stringify({ peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: ['q_proj'] });
writeFileSync(join(dir, 'adapter_config.json'), config);
writeFileSync(
  join(dir, 'metadata.json'),
  JSON.stringify({
    schema_version: 1,
    id: 'bench-adapter',
    version: '1.0.0',
    base_model: 'bench',
    created_at: '2026-11-27T00:00:00Z',
    training: { dataset: 'bench' },
    checksum: {
      algorithm: 'sha256',
      files: {
        'adapter_model.safetensors': hash.digest('hex'),
        'adapter_config.json': createHash('sha256').update(config).digest('hex'),
      },
    },
  }),
);

// warm the page cache for both sides
measure('openssl', ['dgst', '-sha256', weights]);
const res = compare(trials, {
  openssl: () => measure('openssl', ['dgst', '-sha256', weights, join(dir, 'adapter_config.json')]),
  verify: () => measure(process.execPath, [BIN, 'verify', dir, '--json']),
});
const startup = compare(Math.max(trials, 5), {
  node: () => measure(process.execPath, ['-e', '0']),
  version: () => measure(process.execPath, [BIN, '--version']),
});

const ratio = res.verify.wall / res.openssl.wall;
const sRatio = startup.version.wall / startup.node.wall;
console.log('');
console.log(
  `verify ${sizeGiB} GiB:  ${res.verify.wall.toFixed(3)} s (median of ${trials}), peak RSS ${res.verify.rssMiB.toFixed(1)} MiB`,
);
console.log(`openssl dgst:    ${res.openssl.wall.toFixed(3)} s`);
console.log(`ratio verify/openssl = ${ratio.toFixed(3)} (target ≤ 1.15) ${verdict(ratio <= 1.15)}`);
console.log(
  `peak RSS ${res.verify.rssMiB.toFixed(1)} MiB (target ≤ 100) ${verdict(res.verify.rssMiB <= 100)}`,
);
console.log(
  `--version: ${(startup.version.wall * 1000).toFixed(1)} ms vs node -e 0: ${(startup.node.wall * 1000).toFixed(1)} ms, ratio ${sRatio.toFixed(2)} (target ≤ 3) ${verdict(sRatio <= 3)}`,
);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
