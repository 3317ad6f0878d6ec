#!/usr/bin/env node
// Signing on a generated 2 GiB adapter, each against its reference measured in the same run:
//   sign             vs `openssl dgst -sha256` over the same files (target ≤ 1.1×)
//   verify --trust   vs plain `verify` of the same signed adapter (target ≤ 1.05×): every file is
//                    hashed once, for both the checksums and the signature
// Usage: node bench/signing.js [--size-gib 2] [--trials 5] [--keep]
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, compare, measure, requireBuilt, verdict, writeBigAdapter } from './lib.js';

requireBuilt();
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const sizeGiB = arg('--size-gib', 2);
const trials = arg('--trials', 5);

const root = mkdtempSync(join(tmpdir(), 'codi-bench-signing-'));
const { dir, weights } = writeBigAdapter(root, sizeGiB);
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const key = join(root, 'release.key');
const pub = join(root, 'release.pem');
writeFileSync(key, privateKey.export({ type: 'sec1', format: 'pem' }));
writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }));
// the files sign hashes: every file of the adapter (model.sig aside)
const files = ['adapter_config.json', 'adapter_model.safetensors', 'metadata.json'].map((f) => join(dir, f));

// warm the page cache, and sign once so the verifications have a model.sig
measure('openssl', ['dgst', '-sha256', weights]);
measure(process.execPath, [BIN, 'sign', dir, '--key', key]);

const signing = compare(trials, {
  openssl: () => measure('openssl', ['dgst', '-sha256', ...files]),
  sign: () => measure(process.execPath, [BIN, 'sign', dir, '--key', key, '--json']),
});
const verifying = compare(trials, {
  verify: () => measure(process.execPath, [BIN, 'verify', dir, '--json']),
  trusted: () => measure(process.execPath, [BIN, 'verify', dir, '--trust', pub, '--json']),
});

const signRatio = signing.sign.wall / signing.openssl.wall;
const trustRatio = verifying.trusted.wall / verifying.verify.wall;
console.log('');
console.log(`${sizeGiB} GiB adapter, medians of ${trials} alternated runs`);
console.log(
  `sign:            ${signing.sign.wall.toFixed(3)} s, peak RSS ${signing.sign.rssMiB.toFixed(1)} MiB`,
);
console.log(`openssl dgst:    ${signing.openssl.wall.toFixed(3)} s (same files)`);
console.log(`ratio sign/openssl = ${signRatio.toFixed(3)} (target ≤ 1.1) ${verdict(signRatio <= 1.1)}`);
console.log(
  `verify --trust:  ${verifying.trusted.wall.toFixed(3)} s, peak RSS ${verifying.trusted.rssMiB.toFixed(1)} MiB`,
);
console.log(`verify:          ${verifying.verify.wall.toFixed(3)} s`);
console.log(
  `ratio verify --trust/verify = ${trustRatio.toFixed(3)} (target ≤ 1.05) ${verdict(trustRatio <= 1.05)}`,
);
if (!process.argv.includes('--keep')) rmSync(root, { recursive: true, force: true });
