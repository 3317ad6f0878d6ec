#!/usr/bin/env node
// A 1 GiB PyTorch .bin adapter, laid out as torch.save writes it (STORED entries aligned to 64 bytes,
// data descriptors), checked side by side with `openssl dgst -sha256` over the same file:
// - `codi-adapter verify` (the scan of the archive and its pickle, then the sha256 of every byte);
//   target ≤ 1.2× openssl;
// - the scan alone (`scanTorchBin` in a fresh node), which reads the directory, every local header and
//   data descriptor and data.pkl, but no tensor data.
// Usage: node bench/bin-scan.js [--size-gib 1] [--trials 5] [--keep]
import { createHash, randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { torchArchiveEntries, torchDataPickle, zipBytes } from '../dist/testkit/torch-bin.js';
import { BIN, compare, measure, REPO, requireBuilt, verdict } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeGiB = arg('--size-gib', 1);
const trials = arg('--trials', 5);

// q_proj LoRAs of r=256 on 8192-wide layers: 16 MiB per layer (F32 A + B)
const r = 256;
const width = 8192;
const perTensor = r * width * 4;
const layers = Math.round((sizeGiB * 1024 ** 3) / (2 * perTensor));
const root = mkdtempSync(join(tmpdir(), 'codi-bench-bin-'));
const dir = join(root, 'bench-bin-adapter');
mkdirSync(dir);

const tensors = [];
for (let l = 0; l < layers; l++) {
  const p = `base_model.model.model.layers.${l}.self_attn.q_proj`;
  for (const [half, shape] of [
    ['lora_A', [r, width]],
    ['lora_B', [width, r]],
  ]) {
    const data = new Uint8Array(perTensor);
    randomFillSync(data, 0, 4096);
    tensors.push({ name: `${p}.${half}.weight`, dtype: 'F32', shape, data });
  }
}
const bin = zipBytes(
  torchArchiveEntries(
    torchDataPickle(tensors),
    tensors.map((t) => t.data),
    'adapter_model',
  ),
  { descriptors: true },
);
tensors.length = 0;
const weights = join(dir, 'adapter_model.bin');
writeFileSync(weights, bin);
const digest = createHash('sha256').update(bin).digest('hex');
console.log(`generated a ${(bin.length / 1024 ** 3).toFixed(2)} GiB .bin (${layers * 2} tensors) in ${dir}`);
const config = JSON.stringify({ peft_type: 'LORA', r, lora_alpha: 2 * r, target_modules: ['q_proj'] });
writeFileSync(join(dir, 'adapter_config.json'), config);
writeFileSync(
  join(dir, 'metadata.json'),
  JSON.stringify({
    schema_version: 1,
    id: 'bench-bin-adapter',
    version: '1.0.0',
    base_model: 'bench',
    created_at: '2026-12-07T00:00:00Z',
    training: { dataset: 'bench' },
    checksum: {
      algorithm: 'sha256',
      files: {
        'adapter_model.bin': digest,
        'adapter_config.json': createHash('sha256').update(config).digest('hex'),
      },
    },
  }),
);

const scanScript = `import('${REPO}dist/files/torch-bin.js').then(async (m) => { const s = await m.scanTorchBin(process.argv[1]); if (s.tensors.length !== ${layers * 2}) process.exit(1); })`;
// warm the page cache for every side
measure('openssl', ['dgst', '-sha256', weights]);
const res = compare(trials, {
  openssl: () => measure('openssl', ['dgst', '-sha256', weights]),
  verify: () => measure(process.execPath, [BIN, 'verify', dir, '--json'], { expectStatus: 0 }),
  scan: () => measure(process.execPath, ['--input-type=module', '-e', scanScript, weights]),
});

const ratio = res.verify.wall / res.openssl.wall;
const scanRatio = res.scan.wall / res.openssl.wall;
console.log('');
console.log(`openssl dgst -sha256: ${res.openssl.wall.toFixed(3)} s (median of ${trials})`);
console.log(
  `verify (scan + sha256): ${res.verify.wall.toFixed(3)} s, peak RSS ${res.verify.rssMiB.toFixed(1)} MiB; ratio ${ratio.toFixed(3)} (target ≤ 1.2) ${verdict(ratio <= 1.2)}`,
);
console.log(
  `scan alone: ${res.scan.wall.toFixed(3)} s, peak RSS ${res.scan.rssMiB.toFixed(1)} MiB; ratio ${scanRatio.toFixed(3)} (target ≤ 1.2) ${verdict(scanRatio <= 1.2)}`,
);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
process.exit(ratio <= 1.2 && scanRatio <= 1.2 ? 0 : 1);
