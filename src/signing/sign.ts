/**
 * `sign`: writes `<dir>/model.sig` as `model_signing sign key <dir> --signature <dir>/model.sig`
 * would, so `model_signing verify key` accepts it, and so does `verify --trust`. The adapter is
 * verified first (fail closed), and that verification hashes every file once: the digests the
 * checksums are checked with are the digests signed.
 */
import { createHash, sign as signBytes, verify as verifyBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import { removeDeadTemps, writeFileAtomic } from '../atomic.js';
import { nowMs } from '../clock.js';
import { CodiError } from '../errors.js';
import type { Finding } from '../findings.js';
import { SIGNATURE_FILE } from '../layout.js';
import { requireValid, verifyAdapter, type VerifyOptions } from '../verify.js';
import { loadSigningKey } from './keys.js';
import { signingSet } from './manifest.js';
import { bundleText, preAuthEncoding } from './model-sig.js';
import { comparePaths, rootDigest, statementPayload, type Resource } from './statement.js';

export interface SignOptions {
  /** the PEM private key */
  key: string;
  /** for an encrypted key */
  passphrase?: string;
  /** who hashes the weights file (the front door begins it early) */
  weightsHash?: VerifyOptions['weightsHash'];
}

export interface SignResult {
  /** the model.sig written */
  signature: string;
  adapter: { id: string | null; version: string | null; path: string };
  key: { fingerprint: string; curve: string; file: string };
  /** the statement's subject: the folder's name, and sha256 over the files' digests in signed order */
  subject: { name: string; digest: string };
  /** sha256 of the statement's bytes: exactly what the signature signs (in the DSSE envelope) */
  statement_digest: string;
  files: { name: string; sha256: string }[];
  /** paths left out of the signature, recorded in it as ignored */
  ignored: string[];
  /** a model.sig was there and was replaced */
  replaced: boolean;
  /** verification's warnings (signed all the same) */
  warnings: Finding[];
  durationMs: number;
}

export async function signAdapter(dir: string, options: SignOptions): Promise<SignResult> {
  const started = nowMs();
  // the key first: a wrong key fails before any file is hashed
  const key = await loadSigningKey(options.key, options.passphrase);
  const report = await verifyAdapter(dir, {
    hashAll: true,
    ...(options.weightsHash ? { weightsHash: options.weightsHash } : {}),
  });
  requireValid(report);
  const { layout, digests } = report.verified;
  const { files, ignorePaths } = signingSet(layout);
  const resources: Resource[] = files
    .map((name) => {
      const digest = digests.get(name);
      if (digest === undefined) throw new CodiError('INTERNAL', `${name} was not hashed for the signature`);
      return { name, digest };
    })
    .sort((a, b) => comparePaths(a.name, b.name));
  const subjectName = basename(layout.dir);
  const payload = statementPayload(subjectName, resources, {
    allow_symlinks: false,
    ignore_paths: ignorePaths,
  });
  const pae = await preAuthEncoding(payload);
  const signature = signBytes(key.publicKey.hash, pae, { key: key.privateKey, dsaEncoding: 'der' });
  // a signature that does not verify must never be written (a key whose halves do not match, say)
  if (!verifyBytes(key.publicKey.hash, pae, { key: key.publicKey.key, dsaEncoding: 'der' }, signature)) {
    throw new CodiError('KEY_INVALID', `${options.key}: the signature made with this key does not verify`, {
      file: options.key,
    });
  }
  const target = join(layout.dir, SIGNATURE_FILE);
  await removeDeadTemps(layout.dir, [SIGNATURE_FILE]);
  await writeFileAtomic(target, bundleText(payload, signature, key.publicKey.hint));
  return {
    signature: target,
    adapter: { id: report.adapter.id, version: report.adapter.version, path: layout.dir },
    key: { fingerprint: key.publicKey.fingerprint, curve: key.publicKey.curve, file: options.key },
    subject: { name: subjectName, digest: `sha256:${rootDigest(resources)}` },
    statement_digest: `sha256:${createHash('sha256').update(payload).digest('hex')}`,
    files: resources.map((r) => ({ name: r.name, sha256: r.digest })),
    ignored: ignorePaths,
    replaced: layout.files.some((f) => f.name === SIGNATURE_FILE),
    warnings: report.findings.filter((f) => f.level === 'warning'),
    durationMs: Math.round(nowMs() - started),
  };
}
