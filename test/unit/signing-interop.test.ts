/**
 * Interoperability with OpenSSF Model Signing (`model_signing`): the signatures its `sign key` wrote
 * verify here, its certificate and keyless bundles are refused as unverifiable offline, and the
 * statement written here for a model is the one it writes (test/fixtures/model-signing/README.md
 * says where each vector comes from).
 */
import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { sha256File } from '../../src/checksum.js';
import type { Finding } from '../../src/findings.js';
import { scanLayout } from '../../src/layout.js';
import { finishSignature, readSignature } from '../../src/signing/check.js';
import { loadTrustedKeys, type TrustedKeys } from '../../src/signing/keys.js';
import { bundleText } from '../../src/signing/model-sig.js';
import { comparePaths, parseStatement, statementPayload } from '../../src/signing/statement.js';
import { verifyAdapter } from '../../src/verify.js';
import { tempDir } from '../helpers/tmp.js';

const VECTORS = fileURLToPath(new URL('../fixtures/model-signing/', import.meta.url));
const UPSTREAM_PUB = join(VECTORS, 'keys/signing-key-pub.pem');
const UPSTREAM_FINGERPRINT = 'sha256:e8450dec4eb99dae995da9af1bc2cc9f76ed669ee2e744f57abba763df3e3f8e';

/** A vector's folder, copied so a test may change it. */
async function copyOf(vector: string, without: readonly string[] = []): Promise<string> {
  const dir = join(await tempDir('codi-sig-vector-'), vector.split('/').pop() ?? 'model');
  await cp(join(VECTORS, vector), dir, { recursive: true });
  for (const name of without) await rm(join(dir, name));
  return dir;
}

/** A model folder's signature checked the way verify checks an adapter's: read, then compared. */
async function verifyFolder(
  dir: string,
  trust: TrustedKeys,
): Promise<{ ok: boolean; findings: Finding[]; signer: string | null }> {
  const layout = await scanLayout(dir);
  const findings: Finding[] = [];
  const pending = await readSignature(layout, trust, findings);
  const digests = new Map<string, string>();
  for (const name of pending.comparison?.compared ?? []) {
    digests.set(name, await sha256File(join(layout.dir, name)));
  }
  const report = finishSignature(pending, digests, findings);
  return { ok: report.ok, findings, signer: report.signer?.fingerprint ?? null };
}

const codes = (findings: readonly Finding[]): string[] => findings.map((f) => f.code);

describe("model_signing's signatures verify here", () => {
  it('v1.1.0 sign key (P-384, the ignored path recorded in the signature): valid, signed by the upstream key', async () => {
    const trust = await loadTrustedKeys(UPSTREAM_PUB);
    expect(trust.keys.map((k) => [k.fingerprint, k.curve])).toEqual([[UPSTREAM_FINGERPRINT, 'P-384']]);
    const dir = await copyOf('v1.1.0-elliptic-key');
    expect(await verifyFolder(dir, trust)).toEqual({ ok: true, findings: [], signer: UPSTREAM_FINGERPRINT });
    // the signer ignored ignore-me: whatever it holds does not matter
    await writeFile(join(dir, 'ignore-me'), 'anything');
    expect((await verifyFolder(dir, trust)).ok).toBe(true);
  });

  it('v1.1.0: a changed, an added, a removed and a renamed file each fail as SIGNATURE_FILES_DIFFER', async () => {
    const trust = await loadTrustedKeys(UPSTREAM_PUB);
    const changed = await copyOf('v1.1.0-elliptic-key');
    await writeFile(join(changed, 'signme-1'), 'signme-X\n');
    const added = await copyOf('v1.1.0-elliptic-key');
    await writeFile(join(added, 'extra'), '');
    const removed = await copyOf('v1.1.0-elliptic-key', ['signme-2']);
    const renamed = await copyOf('v1.1.0-elliptic-key', ['signme-2']);
    await cp(join(VECTORS, 'v1.1.0-elliptic-key/signme-2'), join(renamed, 'signme-3'));
    const results = await Promise.all([changed, added, removed, renamed].map((d) => verifyFolder(d, trust)));
    expect(results.map((r) => [r.ok, codes(r.findings), r.findings.map((f) => f.file)])).toEqual([
      [false, ['SIGNATURE_FILES_DIFFER'], ['signme-1']],
      [false, ['SIGNATURE_FILES_DIFFER'], ['extra']],
      [false, ['SIGNATURE_FILES_DIFFER'], ['signme-2']],
      [false, ['SIGNATURE_FILES_DIFFER', 'SIGNATURE_FILES_DIFFER'], ['signme-3', 'signme-2']],
    ]);
    expect(results[0]?.findings[0]?.message).toMatch(/changed since it was signed/u);
  });

  it('v1.0.1, the legacy bundle (rawBytes, no hint, keyid null): valid without the file it was told to ignore', async () => {
    const trust = await loadTrustedKeys(UPSTREAM_PUB);
    expect(await verifyFolder(await copyOf('v1.0.1-elliptic-key', ['ignore-me']), trust)).toEqual({
      ok: true,
      findings: [],
      signer: UPSTREAM_FINGERPRINT,
    });
    // it does not record ignore-me: the file is one its signature does not cover
    const withIt = await verifyFolder(await copyOf('v1.0.1-elliptic-key'), trust);
    expect([withIt.ok, codes(withIt.findings)]).toEqual([false, ['SIGNATURE_FILES_DIFFER']]);
  });

  it('a legacy bundle under another trusted key: untrusted, named by the key it carries', async () => {
    const other = await tempDir();
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    await writeFile(join(other, 'other.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const r = await verifyFolder(
      await copyOf('v1.0.1-elliptic-key', ['ignore-me']),
      await loadTrustedKeys(other),
    );
    expect(codes(r.findings)).toEqual(['SIGNATURE_UNTRUSTED_KEY']);
    expect(r.findings[0]?.message).toContain(UPSTREAM_FINGERPRINT);
  });

  it('the golden statement with allow_symlinks true and nested paths, as model_signing printed it: valid', async () => {
    const dir = await copyOf('golden/sample_model');
    await cp(join(VECTORS, 'allow-symlinks/model.sig'), join(dir, 'model.sig'));
    expect(await verifyFolder(dir, await loadTrustedKeys(UPSTREAM_PUB))).toEqual({
      ok: true,
      findings: [],
      signer: UPSTREAM_FINGERPRINT,
    });
  });

  it('an adapter signed here verifies through verify --trust (the committed vector)', async () => {
    const r = await verifyAdapter(join(VECTORS, 'codi-signed/tiny-qwen2-lora'), {
      trust: await loadTrustedKeys(UPSTREAM_PUB),
    });
    expect([r.ok, r.findings, r.signature?.ok, r.signature?.signer?.fingerprint]).toEqual([
      true,
      [],
      true,
      UPSTREAM_FINGERPRINT,
    ]);
  });
});

describe('what cannot be verified offline with a public key is refused, with its own code', () => {
  it.each([
    ['v1.1.0-certificate', /certificate bundle/u],
    ['v1.1.0-sigstore', /certificate bundle/u],
    ['v1.0.0-elliptic-key', /single file/u],
  ])('%s: SIGNATURE_UNSUPPORTED', async (vector, why) => {
    const r = await verifyFolder(await copyOf(vector), await loadTrustedKeys(UPSTREAM_PUB));
    expect([r.ok, codes(r.findings)]).toEqual([false, ['SIGNATURE_UNSUPPORTED']]);
    expect(r.findings[0]?.message).toMatch(why);
  });

  it('a statement of shards (the golden one, signed by the upstream key): SIGNATURE_UNSUPPORTED', async () => {
    const dir = await copyOf('golden/sample_model');
    const payload = await readFile(join(VECTORS, 'golden/sample_model_folder_shard.json'));
    await writeFile(join(dir, 'model.sig'), await upstreamSigned(payload));
    const r = await verifyFolder(dir, await loadTrustedKeys(UPSTREAM_PUB));
    expect(codes(r.findings)).toEqual(['SIGNATURE_UNSUPPORTED']);
    expect(r.findings[0]?.message).toMatch(/shards/u);
  });
});

/** A bundle of `payload` signed by the upstream P-384 key (plain crypto, as model_signing signs). */
async function upstreamSigned(payload: Buffer): Promise<string> {
  const key = createPrivateKey(await readFile(join(VECTORS, 'keys/signing-key.pem')));
  const type = 'application/vnd.in-toto+json';
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${payload.length} `), payload]);
  return bundleText(payload, sign('sha384', pae, { key, dsaEncoding: 'der' }), UPSTREAM_FINGERPRINT.slice(7));
}

describe('the statement written here is the one model_signing writes', () => {
  it('for upstream fixture model: the same subject digest and resources as its golden statement', async () => {
    const golden = JSON.parse(await readFile(join(VECTORS, 'golden/sample_model_folder.json'), 'utf8')) as {
      subject: unknown;
      predicate: { resources: unknown; serialization: unknown };
    };
    const layout = await scanLayout(join(VECTORS, 'golden/sample_model'));
    const resources = await Promise.all(
      layout.files.map(async (f) => ({ name: f.name, digest: await sha256File(join(layout.dir, f.name)) })),
    );
    const ours = JSON.parse(
      statementPayload('sample_model', resources, { allow_symlinks: true, ignore_paths: [] }).toString(),
    ) as typeof golden;
    expect(ours.subject).toEqual(golden.subject);
    expect(ours.predicate.resources).toEqual(golden.predicate.resources);
    expect(ours.predicate.serialization).toEqual(golden.predicate.serialization);
  });

  it('for the v1.1.0 folder: the statement model_signing 1.1.0 signed, but for the order of ignore_paths (a set there)', async () => {
    const sig = JSON.parse(await readFile(join(VECTORS, 'v1.1.0-elliptic-key/model.sig'), 'utf8')) as {
      dsseEnvelope: { payload: string };
    };
    const upstream = parseStatement(Buffer.from(sig.dsseEnvelope.payload, 'base64'));
    const files = ['signme-1', 'signme-2'];
    const resources = await Promise.all(
      files.map(async (name) => ({
        name,
        digest: await sha256File(join(VECTORS, 'v1.1.0-elliptic-key', name)),
      })),
    );
    const ours = parseStatement(
      statementPayload('v1.1.0-elliptic-key', resources, {
        allow_symlinks: false,
        ignore_paths: upstream.serialization.ignore_paths,
      }),
    );
    expect({
      ...ours,
      serialization: { ...ours.serialization, ignore_paths: [...ours.serialization.ignore_paths].sort() },
    }).toEqual({
      ...upstream,
      serialization: {
        ...upstream.serialization,
        ignore_paths: [...upstream.serialization.ignore_paths].sort(),
      },
    });
  });

  it('sorts paths by component and code point, as model_signing does (not as a string sort would)', () => {
    const names = ['ab', 'a.b', 'a-b', 'a/b', 'a/b/c', 'a', '\u{1F600}', '\uFFFD', 'Z'];
    expect([...names].sort(comparePaths)).toEqual([
      'Z',
      'a',
      'a/b',
      'a/b/c',
      'a-b',
      'a.b',
      'ab',
      '\uFFFD',
      '\u{1F600}',
    ]);
    // a plain sort puts the astral character before U+FFFD (UTF-16 code units)
    expect([...names].sort()).not.toEqual([...names].sort(comparePaths));
  });

  it('escapes non-ASCII names in the statement as model_signing prints them', () => {
    const digest = createHash('sha256').update('').digest('hex');
    const text = statementPayload('m', [{ name: 'modèle', digest }], {
      allow_symlinks: false,
      ignore_paths: [],
    }).toString();
    expect(text).toContain('"name": "mod\\u00e8le"');
    expect(text.endsWith('}')).toBe(true);
    expect(parseStatement(Buffer.from(text)).resources[0]?.name).toBe('modèle');
  });
});
