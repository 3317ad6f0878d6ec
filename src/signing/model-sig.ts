/**
 * model.sig, as OpenSSF Model Signing (`model_signing` 1.x, `sign key` / `verify key`) writes and
 * reads it: a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an in-toto
 * Statement v1. Its predicate (`https://model_signing/signature/v1.0`) lists every file's path and
 * sha256 and the serialization settings; its one subject's digest is the sha256 of the files'
 * digests concatenated, in the predicate's order.
 *
 * The bundle is decoded and checked by `@sigstore/bundle` (`bundleFromJSON`); what it lets through and
 * model_signing refuses (a field it does not know: its reader forbids extra fields) or cannot verify
 * offline (a certificate, a transparency-log entry, a timestamp) is refused here first, each with its
 * own reason. The bundle is written by hand, field for field as model_signing writes it:
 * `@sigstore/bundle`'s writer leaves out the empty `tlogEntries` and `keyid` model_signing writes.
 * Nothing is re-serialized on the way in: the signature covers the payload's exact bytes.
 */
import type { Bundle } from '@sigstore/bundle';
import { FormatError } from '../formats/format-error.js';
import { parseJson, StrictJsonError } from '../formats/strict-json.js';
import { decodeUtf8 } from '../formats/utf8.js';

export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

/**
 * The largest model.sig read. An adapter has at most 10,000 files (the layout's limit) and each costs
 * some 200 bytes of the bundle, so a real one stays under 3 MiB; a larger file is refused unread.
 */
export const MAX_BUNDLE_BYTES = 16 * 1024 * 1024;

/** What a model.sig carries: the payload as signed, the signature, and who signed it. */
export interface SignedBundle {
  payload: Buffer;
  /** DER-encoded ECDSA signature over the DSSE pre-authentication encoding of the payload */
  signature: Buffer;
  /** `publicKey.hint` (hex sha256 of the signer's SPKI PEM); null in bundles older than model_signing 1.1 */
  hint: string | null;
  /** the signer's PEM public key, which bundles older than 1.1 carry as `publicKey.rawBytes` */
  legacyKeyPem: string | null;
}

/**
 * What the signature signs: DSSE's pre-authentication encoding of the payload as an in-toto
 * statement, from `@sigstore/core` (its `dsse` module alone: the package's index also loads its X.509
 * and timestamp code, which key-based verification never uses).
 */
export async function preAuthEncoding(payload: Buffer): Promise<Buffer> {
  const dsse = await import('@sigstore/core/dist/dsse.js');
  return dsse.preAuthEncoding(INTOTO_PAYLOAD_TYPE, payload);
}

/** model.sig's text: compact JSON, keys in model_signing's order, no newline at the end. */
export function bundleText(payload: Buffer, signature: Buffer, hint: string): string {
  return JSON.stringify({
    mediaType: BUNDLE_MEDIA_TYPE,
    verificationMaterial: { publicKey: { hint }, tlogEntries: [] },
    dsseEnvelope: {
      payload: payload.toString('base64'),
      payloadType: INTOTO_PAYLOAD_TYPE,
      signatures: [{ sig: signature.toString('base64'), keyid: '' }],
    },
  });
}

function invalid(message: string, pointer?: string): FormatError {
  return new FormatError('SIGNATURE_INVALID', message, pointer === undefined ? {} : { pointer });
}

function unsupported(message: string, pointer?: string): FormatError {
  return new FormatError('SIGNATURE_UNSUPPORTED', message, pointer === undefined ? {} : { pointer });
}

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The fields model_signing's reader knows at each place; it refuses any other. */
const KNOWN_FIELDS: Readonly<Record<string, readonly string[]>> = {
  '': ['mediaType', 'verificationMaterial', 'dsseEnvelope', 'messageSignature'],
  '/verificationMaterial': [
    'publicKey',
    'x509CertificateChain',
    'certificate',
    'tlogEntries',
    'timestampVerificationData',
  ],
  // rawBytes and keyDetails: what model_signing before 1.1 wrote (its reader drops them)
  '/verificationMaterial/publicKey': ['hint', 'rawBytes', 'keyDetails'],
  '/dsseEnvelope': ['payload', 'payloadType', 'signatures'],
};

function refuseUnknownFields(value: JsonObject, pointer: string): void {
  const known = KNOWN_FIELDS[pointer] ?? [];
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw invalid(
        `model.sig has a field ${JSON.stringify(key)} at ${pointer || '/'} that a model signing bundle does not have`,
        `${pointer}/${key}`,
      );
    }
  }
}

/**
 * What cannot be verified offline with a public key: a certificate (PKI or Sigstore keyless), log
 * entries, timestamps, a plain message signature.
 */
function refuseUnverifiable(top: JsonObject, material: JsonObject): void {
  if ('certificate' in material || 'x509CertificateChain' in material) {
    throw unsupported(
      'model.sig is a certificate bundle (model_signing sign certificate, or keyless Sigstore signing): it needs a certificate chain, a trust root and a transparency log, which an offline verification with public keys does not have',
      `/verificationMaterial/${'certificate' in material ? 'certificate' : 'x509CertificateChain'}`,
    );
  }
  const tlog = material.tlogEntries;
  if (Array.isArray(tlog) && tlog.length > 0) {
    throw unsupported(
      'model.sig carries transparency-log entries, which cannot be checked offline',
      '/verificationMaterial/tlogEntries',
    );
  }
  const stamps = material.timestampVerificationData;
  if (isObject(stamps) && Object.values(stamps).some((v) => !Array.isArray(v) || v.length > 0)) {
    throw unsupported(
      'model.sig carries timestamps, which cannot be checked offline',
      '/verificationMaterial/timestampVerificationData',
    );
  }
  if ('messageSignature' in top) {
    throw unsupported('model.sig signs a message digest, not a model_signing statement', '/messageSignature');
  }
}

/** The bundle's JSON: strict (no key twice), an object. */
function bundleJson(bytes: Uint8Array): JsonObject {
  const decoded = decodeUtf8(bytes);
  if (!('text' in decoded)) throw invalid('model.sig is not UTF-8 text', String(decoded.invalidAt));
  let data: unknown;
  try {
    data = parseJson(decoded.text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    throw invalid(`model.sig is not JSON: ${e.message}`);
  }
  if (!isObject(data)) throw invalid('model.sig is not a JSON object');
  return data;
}

/** The parts of a key-signed DSSE bundle, each checked for its type. */
interface BundleParts {
  top: JsonObject;
  material: JsonObject;
  hint: string | null;
  rawBytes: unknown;
  envelope: JsonObject & { payload: string; payloadType: string };
  sig: string;
  keyid: string;
}

/** The envelope: its payload of the in-toto type, and exactly one signature. */
function envelopeParts(top: JsonObject): Pick<BundleParts, 'envelope' | 'sig' | 'keyid'> {
  const envelope = top.dsseEnvelope;
  if (!isObject(envelope)) throw invalid('model.sig has no DSSE envelope', '/dsseEnvelope');
  refuseUnknownFields(envelope, '/dsseEnvelope');
  const { payload, payloadType, signatures } = envelope;
  if (typeof payloadType !== 'string')
    throw invalid("model.sig's payloadType is not a string", '/dsseEnvelope/payloadType');
  if (payloadType !== INTOTO_PAYLOAD_TYPE) {
    throw invalid(
      `model.sig's payload type is ${JSON.stringify(payloadType)}, not the in-toto statement type ${INTOTO_PAYLOAD_TYPE}`,
      '/dsseEnvelope/payloadType',
    );
  }
  if (typeof payload !== 'string' || payload === '' || !isBase64(payload)) {
    throw invalid("model.sig's payload is not base64", '/dsseEnvelope/payload');
  }
  if (!Array.isArray(signatures) || signatures.length !== 1 || !isObject(signatures[0])) {
    throw invalid('model.sig must hold exactly one signature', '/dsseEnvelope/signatures');
  }
  const [signature] = signatures as [JsonObject];
  for (const key of Object.keys(signature)) {
    if (key !== 'sig' && key !== 'keyid') {
      throw invalid(
        `model.sig's signature has a field ${JSON.stringify(key)}`,
        `/dsseEnvelope/signatures/0/${key}`,
      );
    }
  }
  const { sig, keyid } = signature;
  if (typeof sig !== 'string' || sig === '' || !isBase64(sig)) {
    throw invalid("model.sig's signature is not base64", '/dsseEnvelope/signatures/0/sig');
  }
  if (keyid !== undefined && keyid !== null && typeof keyid !== 'string') {
    throw invalid("model.sig's keyid is not a string", '/dsseEnvelope/signatures/0/keyid');
  }
  return { envelope: { ...envelope, payload, payloadType }, sig, keyid: keyid ?? '' };
}

/** The bundle's parts, refused where model_signing's key verifier would refuse them (or cannot verify). */
function bundleParts(top: JsonObject): BundleParts {
  refuseUnknownFields(top, '');
  const material = top.verificationMaterial;
  if (!isObject(material)) throw invalid('model.sig has no verificationMaterial', '/verificationMaterial');
  refuseUnknownFields(material, '/verificationMaterial');
  refuseUnverifiable(top, material);
  if (top.mediaType !== BUNDLE_MEDIA_TYPE) {
    throw invalid(
      `model.sig's mediaType is ${JSON.stringify(top.mediaType)}, not ${BUNDLE_MEDIA_TYPE}`,
      '/mediaType',
    );
  }
  const publicKey = material.publicKey;
  if (!isObject(publicKey)) {
    throw invalid(
      'model.sig names no public key (verificationMaterial.publicKey)',
      '/verificationMaterial/publicKey',
    );
  }
  refuseUnknownFields(publicKey, '/verificationMaterial/publicKey');
  const { hint, rawBytes } = publicKey;
  if (
    hint !== undefined &&
    hint !== null &&
    (typeof hint !== 'string' || !/^(?:[0-9a-f]{64})?$/u.test(hint))
  ) {
    throw invalid(
      "model.sig's publicKey.hint is not a sha256 in hex",
      '/verificationMaterial/publicKey/hint',
    );
  }
  return {
    top,
    material,
    hint: typeof hint === 'string' && hint !== '' ? hint : null,
    rawBytes,
    ...envelopeParts(top),
  };
}

/**
 * Reads model.sig: a key-signed DSSE bundle of model_signing's, as model_signing's `verify key`
 * accepts it (the legacy fields of releases before 1.1 included). Throws SIGNATURE_INVALID for a
 * file that is not one, SIGNATURE_UNSUPPORTED for one that cannot be verified offline by key.
 */
export function parseBundle(bytes: Uint8Array, sigstore: typeof import('@sigstore/bundle')): SignedBundle {
  const p = bundleParts(bundleJson(bytes));
  // as model_signing's reader: the log releases before 1.1 leave out is added, the key's bytes dropped
  const normalized = {
    ...p.top,
    verificationMaterial: { ...p.material, publicKey: { hint: p.hint ?? '' }, tlogEntries: [] },
    dsseEnvelope: { ...p.envelope, signatures: [{ sig: p.sig, keyid: p.keyid }] },
  };
  let bundle: Bundle;
  try {
    bundle = sigstore.bundleFromJSON(normalized);
  } catch (e) {
    throw invalid(`model.sig is not a valid Sigstore bundle: ${(e as Error).message}`);
  }
  if (!sigstore.isBundleWithDsseEnvelope(bundle) || !sigstore.isBundleWithPublicKey(bundle)) {
    throw invalid('model.sig is not a key-signed DSSE bundle');
  }
  const [signature] = bundle.content.dsseEnvelope.signatures;
  if (!signature) throw invalid('model.sig holds no signature', '/dsseEnvelope/signatures');
  return {
    payload: Buffer.from(bundle.content.dsseEnvelope.payload),
    signature: Buffer.from(signature.sig),
    hint: p.hint,
    legacyKeyPem: legacyKey(p.rawBytes),
  };
}

/** Standard or URL-safe base64 (protobuf's JSON accepts both), padded or not. */
function isBase64(text: string): boolean {
  return /^[A-Za-z0-9+/_-]*={0,2}$/u.test(text) && text.length % 4 !== 1;
}

/** The PEM public key model_signing before 1.1 wrote as `rawBytes` (base64 of the PEM text). */
function legacyKey(rawBytes: unknown): string | null {
  if (typeof rawBytes !== 'string' || !isBase64(rawBytes)) return null;
  const text = Buffer.from(rawBytes, 'base64').toString('utf8');
  return text.includes('-----BEGIN PUBLIC KEY-----') ? text : null;
}
