/**
 * The keys of model signing: the private key `sign` signs with, and the public keys verification
 * trusts. Only EC keys on P-256, P-384 and P-521, as `model_signing sign key` accepts; each curve
 * signs with its own hash (SHA-256, SHA-384, SHA-512), which is what `model_signing` does and what a
 * verifier has to be told (Node's default for an EC key is SHA-256 whatever the curve).
 *
 * A key's fingerprint is `sha256:` and the hex SHA-256 of its SubjectPublicKeyInfo PEM text: the very
 * value `model_signing` writes as the bundle's `publicKey.hint`, so a fingerprint printed here can be
 * matched against a model.sig by eye, and `openssl pkey -pubin -in key.pem | sha256sum` gives it too.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { readRegularFile } from '../byte-source.js';
import { CodiError, environmentError } from '../errors.js';
import { decodeUtf8 } from '../formats/utf8.js';

export type CurveHash = 'sha256' | 'sha384' | 'sha512';

/** The curves model_signing signs with, by OpenSSL's name, with the hash each signs with. */
const CURVES: Readonly<Record<string, { name: string; hash: CurveHash }>> = {
  prime256v1: { name: 'P-256', hash: 'sha256' },
  secp384r1: { name: 'P-384', hash: 'sha384' },
  secp521r1: { name: 'P-521', hash: 'sha512' },
};

/** A key file is a few kilobytes; anything this large is not one (and is not read). */
const MAX_KEY_FILE_BYTES = 1024 * 1024;
/** A folder of trusted keys is read whole; past this many `.pem` files it is not one. */
const MAX_TRUSTED_KEYS = 10_000;

export interface PublicKeyInfo {
  key: KeyObject;
  /** `P-256`, `P-384` or `P-521` */
  curve: string;
  hash: CurveHash;
  /** hex SHA-256 of the SPKI PEM text: model_signing's `publicKey.hint` */
  hint: string;
  /** `sha256:<hint>` */
  fingerprint: string;
}

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: PublicKeyInfo;
  /** the key file, as given */
  path: string;
}

export interface TrustedKey extends PublicKeyInfo {
  /** the file it was read from */
  file: string;
}

export interface TrustedKeys {
  /** the file or folder given */
  source: string;
  keys: TrustedKey[];
}

/** The public key's curve, hash and fingerprint; KEY_UNSUPPORTED unless EC on a curve model_signing signs with. */
export function publicKeyInfo(key: KeyObject, file: string): PublicKeyInfo {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  const type = pub.asymmetricKeyType ?? 'unknown';
  const curveName = pub.asymmetricKeyDetails?.namedCurve ?? '';
  const curve = type === 'ec' ? CURVES[curveName] : undefined;
  if (!curve) {
    const what =
      type === 'ec' ? `an EC key on ${curveName || 'an unnamed curve'}` : `an ${type.toUpperCase()} key`;
    throw new CodiError(
      'KEY_UNSUPPORTED',
      `${file} holds ${what}; model signing takes EC keys on P-256, P-384 or P-521`,
      { file },
    );
  }
  const pem = pub.export({ type: 'spki', format: 'pem' });
  const hint = createHash('sha256').update(pem).digest('hex');
  return { key: pub, curve: curve.name, hash: curve.hash, hint, fingerprint: `sha256:${hint}` };
}

/** `sha256:<hex>` as a fingerprint of the hex `publicKey.hint` of a bundle. */
export function fingerprintOfHint(hint: string): string {
  return `sha256:${hint}`;
}

interface PemBlock {
  label: string;
  text: string;
}

/**
 * The PEM blocks of a key file. Text around them is allowed: GnuTLS's certtool writes a description
 * before the block, and `openssl ecparam -genkey` writes the curve's parameters before the key.
 */
function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/gu;
  for (const m of text.matchAll(re)) blocks.push({ label: m[1] ?? '', text: m[0] });
  return blocks;
}

/** A key file's text: a regular file, small, UTF-8 (PEM is ASCII). */
async function keyFileText(path: string): Promise<string> {
  const st = await stat(path).catch((e: unknown) => {
    throw environmentError(e, path, 'read');
  });
  if (st.isFile() && st.size > MAX_KEY_FILE_BYTES) {
    throw new CodiError('KEY_INVALID', `${path} is ${st.size} bytes: not a PEM key file`, { file: path });
  }
  const decoded = decodeUtf8(await readRegularFile(path));
  if (!('text' in decoded)) {
    throw new CodiError('KEY_INVALID', `${path} is not a PEM key file (not text)`, { file: path });
  }
  return decoded.text;
}

/**
 * The private key to sign with: a PEM `EC PRIVATE KEY` (SEC1) or `PRIVATE KEY` (PKCS#8), or an
 * encrypted one with `passphrase`.
 */
export async function loadSigningKey(path: string, passphrase?: string): Promise<SigningKey> {
  const text = await keyFileText(path);
  const block = pemBlocks(text).find((b) => b.label.endsWith('PRIVATE KEY'));
  if (!block) {
    const isPublic = pemBlocks(text).some((b) => b.label === 'PUBLIC KEY');
    throw new CodiError(
      'KEY_INVALID',
      isPublic
        ? `${path} holds a public key; signing needs the private key`
        : `${path} holds no PEM private key`,
      { file: path, hint: 'give the PEM private key (BEGIN EC PRIVATE KEY or BEGIN PRIVATE KEY)' },
    );
  }
  const encrypted = block.label === 'ENCRYPTED PRIVATE KEY' || /Proc-Type: 4,ENCRYPTED/u.test(block.text);
  if (encrypted && !passphrase) {
    throw new CodiError('KEY_INVALID', `${path} is encrypted and no passphrase was given`, {
      file: path,
      hint: 'put the passphrase in the environment variable CODI_SIGN_PASSPHRASE',
    });
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(encrypted ? { key: block.text, passphrase: passphrase ?? '' } : block.text);
  } catch (e) {
    throw new CodiError(
      'KEY_INVALID',
      `${path}: the private key cannot be read${encrypted ? ' (is the passphrase right?)' : ''}: ${(e as Error).message}`,
      { file: path, cause: e },
    );
  }
  return { privateKey, publicKey: publicKeyInfo(privateKey, path), path };
}

/** Every `BEGIN PUBLIC KEY` block of a file (at least one), each a key model signing can use. */
async function publicKeysIn(file: string): Promise<TrustedKey[]> {
  const blocks = pemBlocks(await keyFileText(file));
  if (blocks.some((b) => b.label.endsWith('PRIVATE KEY'))) {
    throw new CodiError('KEY_INVALID', `${file} holds a private key; trust is given by public keys`, {
      file,
      hint: `trust its public key instead: openssl pkey -in ${basename(file)} -pubout -out ${basename(file, '.pem')}.pub.pem`,
    });
  }
  const keys = blocks.filter((b) => b.label === 'PUBLIC KEY');
  if (keys.length === 0) {
    throw new CodiError('KEY_INVALID', `${file} holds no PEM public key (BEGIN PUBLIC KEY)`, {
      file,
      hint: 'give the signer’s public key: openssl pkey -in private.pem -pubout',
    });
  }
  return keys.map((b) => {
    let key: KeyObject;
    try {
      key = createPublicKey(b.text);
    } catch (e) {
      throw new CodiError('KEY_INVALID', `${file}: a public key cannot be read: ${(e as Error).message}`, {
        file,
        cause: e,
      });
    }
    return { ...publicKeyInfo(key, file), file };
  });
}

/**
 * The trusted public keys: a PEM file (one or more public keys), or a folder whose `*.pem` files are
 * each one. Every key must be usable: a key file that is not is refused, not skipped, so a typo in
 * the trust list cannot silently narrow it.
 */
export async function loadTrustedKeys(source: string): Promise<TrustedKeys> {
  const path = resolve(source);
  const st = await stat(path).catch((e: unknown) => {
    throw environmentError(e, source, 'read');
  });
  let files = [path];
  if (st.isDirectory()) {
    const names = await readdir(path).catch((e: unknown) => {
      throw environmentError(e, source, 'read');
    });
    files = names
      .filter((n) => n.endsWith('.pem') && !n.startsWith('.'))
      .sort()
      .map((n) => join(path, n));
    if (files.length === 0) {
      throw new CodiError('KEY_INVALID', `${source} holds no .pem files: no key is trusted`, {
        file: source,
        hint: 'put the trusted public keys in it as <name>.pem, or give one key file',
      });
    }
    if (files.length > MAX_TRUSTED_KEYS) {
      throw new CodiError('KEY_INVALID', `${source} holds more than ${MAX_TRUSTED_KEYS} .pem files`, {
        file: source,
      });
    }
  }
  const keys: TrustedKey[] = [];
  const seen = new Set<string>();
  for (const file of files) {
    for (const key of await publicKeysIn(file)) {
      if (seen.has(key.hint)) continue;
      seen.add(key.hint);
      keys.push(key);
    }
  }
  return { source: path, keys };
}
