/**
 * An adapter's model.sig checked against trusted keys, in two halves around the hashing verify does
 * anyway: `readSignature` reads the bundle, checks the signature over the statement and the
 * statement itself (before any file is hashed, so the files it signs join the one hashing pass), and
 * `finishSignature` compares the files present with the files signed once their digests are in.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import { join } from 'node:path';
import { RegularFile } from '../byte-source.js';
import { asCodiError, CodiError } from '../errors.js';
import { FormatError } from '../formats/format-error.js';
import { finding, findingFromError, type Finding } from '../findings.js';
import { SIGNATURE_FILE, type AdapterLayout } from '../layout.js';
import { publicKeyInfo, type PublicKeyInfo, type TrustedKey, type TrustedKeys } from './keys.js';
import { comparedFiles, compareWithSigned, type Comparison } from './manifest.js';
import { MAX_BUNDLE_BYTES, parseBundle, preAuthEncoding, type SignedBundle } from './model-sig.js';
import { parseStatement, type Statement } from './statement.js';

/** What verify reports of model.sig. */
export interface SignatureReport {
  file: typeof SIGNATURE_FILE;
  /** model.sig is there */
  present: boolean;
  /** it was checked against trusted keys */
  checked: boolean;
  /** checked, and everything held: a trusted key signed exactly the files present */
  ok: boolean;
  /** the trusted key that signed it */
  signer: { fingerprint: string; curve: string; key_file: string } | null;
  /** the statement's subject (the folder's name when signed, and the digest over the files' digests) */
  subject: { name: string; digest: string } | null;
  /** how many files the signature lists */
  signed_files: number | null;
  /** sha256 of model.sig itself */
  sha256: string | null;
}

/** A signature read and checked, waiting for the files' digests. */
export interface PendingSignature {
  report: SignatureReport;
  statement: Statement | null;
  comparison: Comparison | null;
}

export function emptySignatureReport(present: boolean): SignatureReport {
  return {
    file: SIGNATURE_FILE,
    present,
    checked: false,
    ok: false,
    signer: null,
    subject: null,
    signed_files: null,
    sha256: null,
  };
}

/**
 * model.sig read and checked against `trust`: its findings go to `findings`; the statement comes back
 * when the signature holds, with the files present it is to be compared with.
 */
export async function readSignature(
  layout: AdapterLayout,
  trust: TrustedKeys,
  findings: Finding[],
): Promise<PendingSignature> {
  const present = layout.files.some((f) => f.name === SIGNATURE_FILE);
  const report = { ...emptySignatureReport(present), checked: true };
  if (!present) {
    const fingerprints = trust.keys.map((k) => k.fingerprint).join(', ');
    findings.push(
      finding(
        'SIGNATURE_MISSING',
        `the adapter has no ${SIGNATURE_FILE}, and only adapters signed by a trusted key are accepted (${fingerprints})`,
        SIGNATURE_FILE,
      ),
    );
    return { report, statement: null, comparison: null };
  }
  try {
    const bytes = await readBundleFile(join(layout.dir, SIGNATURE_FILE));
    report.sha256 = createHash('sha256').update(bytes).digest('hex');
    const sigstore = await import('@sigstore/bundle');
    const bundle = parseBundle(bytes, sigstore);
    const signer = await signerOf(bundle, trust);
    const statement = parseStatement(bundle.payload);
    report.signer = { fingerprint: signer.fingerprint, curve: signer.curve, key_file: signer.file };
    report.subject = statement.subject;
    report.signed_files = statement.resources.length;
    return { report, statement, comparison: comparedFiles(layout, statement) };
  } catch (e) {
    const error = asCodiError(e, SIGNATURE_FILE);
    if (!error) throw e;
    findings.push(findingFromError(error, SIGNATURE_FILE));
    return { report, statement: null, comparison: null };
  }
}

/** model.sig's bytes; SIGNATURE_TOO_LARGE, unread, past the size a signature can have. */
async function readBundleFile(path: string): Promise<Uint8Array> {
  const file = await RegularFile.open(path, { noFollow: true });
  try {
    if (file.size > MAX_BUNDLE_BYTES) {
      throw new CodiError(
        'SIGNATURE_TOO_LARGE',
        `${SIGNATURE_FILE} is ${file.size} bytes; a signature of an adapter takes a few kilobytes (at most ${MAX_BUNDLE_BYTES}), so it is not read`,
        { file: SIGNATURE_FILE },
      );
    }
    return await file.readBytes(0, file.size);
  } finally {
    await file.close();
  }
}

/**
 * The trusted key whose signature over the payload verifies. A bundle names its key by hint; one
 * from before model_signing 1.1 names none, and every trusted key is tried (its embedded key, if it
 * has one, only tells an untrusted signer from a broken signature).
 */
async function signerOf(bundle: SignedBundle, trust: TrustedKeys): Promise<TrustedKey> {
  const pae = await preAuthEncoding(bundle.payload);
  const verifies = (k: PublicKeyInfo): boolean =>
    verify(k.hash, pae, { key: k.key, dsaEncoding: 'der' }, bundle.signature);
  const candidates = bundle.hint === null ? trust.keys : trust.keys.filter((k) => k.hint === bundle.hint);
  const signer = candidates.find(verifies);
  if (signer) return signer;
  const trusted = `${trust.keys.length === 1 ? 'the trusted key' : `the ${trust.keys.length} trusted keys`} (${trust.keys.map((k) => k.fingerprint).join(', ')})`;
  if (bundle.hint !== null && candidates.length === 0) {
    throw new FormatError(
      'SIGNATURE_UNTRUSTED_KEY',
      `${SIGNATURE_FILE} is signed by the key sha256:${bundle.hint}, which is not one of ${trusted}`,
      { pointer: '/verificationMaterial/publicKey/hint' },
    );
  }
  if (bundle.hint === null && bundle.legacyKeyPem !== null) {
    const embedded = legacySigner(bundle.legacyKeyPem);
    if (embedded && verifies(embedded)) {
      throw new FormatError(
        'SIGNATURE_UNTRUSTED_KEY',
        `${SIGNATURE_FILE} is signed by the key ${embedded.fingerprint}, which is not one of ${trusted}`,
        { pointer: '/verificationMaterial/publicKey/rawBytes' },
      );
    }
  }
  throw new FormatError(
    'SIGNATURE_INVALID',
    bundle.hint === null
      ? `the signature in ${SIGNATURE_FILE} does not verify with ${trusted}`
      : `the signature in ${SIGNATURE_FILE} does not verify with the key it names (sha256:${bundle.hint}): the statement or the signature was altered`,
    { pointer: '/dsseEnvelope/signatures/0/sig' },
  );
}

function legacySigner(pem: string): PublicKeyInfo | null {
  try {
    return publicKeyInfo(createPublicKey(pem), SIGNATURE_FILE);
  } catch {
    return null;
  }
}

/** The files present against the files signed, once their digests are in; sets `ok`. */
export function finishSignature(
  pending: PendingSignature,
  digests: ReadonlyMap<string, string>,
  findings: Finding[],
): SignatureReport {
  const { report, statement, comparison } = pending;
  if (!statement || !comparison) return report;
  const differ = compareWithSigned(statement, comparison, digests);
  for (const f of differ) findings.push(f);
  const unhashed = comparison.compared.some((name) => !digests.has(name));
  report.ok = differ.length === 0 && !unhashed;
  return report;
}
