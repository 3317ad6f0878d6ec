/**
 * The in-toto Statement model_signing signs: one subject (the model folder's name, and the sha256 of
 * its files' digests concatenated in the predicate's order) and the predicate
 * `https://model_signing/signature/v1.0`, which lists every file's path and sha256 and the
 * serialization settings. Written as model_signing prints it; read from the exact bytes signed,
 * strictly, and held to what model_signing's own verifier requires.
 */
import { createHash } from 'node:crypto';
import { FormatError } from '../formats/format-error.js';
import { parseJson, StrictJsonError } from '../formats/strict-json.js';
import { decodeUtf8 } from '../formats/utf8.js';

export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
export const PREDICATE_TYPE = 'https://model_signing/signature/v1.0';
/** model_signing's pre-1.0 predicate, which its current verifier reads through a compatibility path */
const LEGACY_PREDICATE_TYPE = 'https://model_signing/Digests/v0.1';

export interface Resource {
  /** path relative to the model folder, `/`-separated */
  name: string;
  /** lowercase hex sha256 */
  digest: string;
}

export interface Serialization {
  method: 'files';
  hash_type: 'sha256';
  allow_symlinks: boolean;
  /** paths relative to the model folder the signer left out */
  ignore_paths: string[];
}

export interface Statement {
  subject: { name: string; digest: string };
  resources: Resource[];
  serialization: Serialization;
}

/**
 * The order model_signing lists resources in: by path components, each compared by code point (UTF-8
 * bytes compare in code-point order). `a/b` sorts before `a-b`, which a plain string sort would not do.
 */
export function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = Buffer.compare(Buffer.from(pa[i] ?? '', 'utf8'), Buffer.from(pb[i] ?? '', 'utf8'));
    if (c !== 0) return c;
  }
  return pa.length - pb.length;
}

/** The subject's digest: sha256 over the resources' raw digests, in the order given. */
export function rootDigest(resources: readonly Resource[]): string {
  const h = createHash('sha256');
  for (const r of resources) h.update(Buffer.from(r.digest, 'hex'));
  return h.digest('hex');
}

/**
 * The statement's bytes, as model_signing prints it (two-space indentation, non-ASCII escaped, no
 * newline at the end); the resources sorted as model_signing sorts them, the ignored paths sorted.
 */
export function statementPayload(
  subjectName: string,
  resources: readonly Resource[],
  serialization: Omit<Serialization, 'method' | 'hash_type'>,
): Buffer {
  const sorted = [...resources].sort((a, b) => comparePaths(a.name, b.name));
  const statement = {
    _type: STATEMENT_TYPE,
    subject: [{ name: subjectName, digest: { sha256: rootDigest(sorted) } }],
    predicateType: PREDICATE_TYPE,
    predicate: {
      serialization: {
        method: 'files',
        hash_type: 'sha256',
        allow_symlinks: serialization.allow_symlinks,
        ...(serialization.ignore_paths.length > 0
          ? { ignore_paths: [...serialization.ignore_paths].sort() }
          : {}),
      },
      resources: sorted.map((r) => ({ algorithm: 'sha256', digest: r.digest, name: r.name })),
    },
  };
  const text = JSON.stringify(statement, null, 2).replace(
    /[\u0080-\uffff]/gu,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return Buffer.from(text, 'utf8');
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

const HEX_SHA256 = /^[0-9a-fA-F]{64}$/u;

/**
 * A signed statement's bytes, checked as model_signing's verifier checks them (and a little more:
 * a resource named twice, or a path that leaves the folder, is refused rather than let one entry
 * shadow another). Throws SIGNATURE_INVALID, or SIGNATURE_UNSUPPORTED for a statement model_signing
 * wrote in a form `verify key` itself cannot check (shards, another hash, the pre-1.0 predicate, a
 * single file instead of a folder).
 */
export function parseStatement(payload: Uint8Array): Statement {
  const decoded = decodeUtf8(payload);
  if (!('text' in decoded)) throw invalid('the signed statement is not UTF-8 text');
  let data: unknown;
  try {
    data = parseJson(decoded.text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    throw invalid(`the signed statement is not JSON: ${e.message}`);
  }
  if (!isObject(data)) throw invalid('the signed statement is not a JSON object');
  if (data._type !== STATEMENT_TYPE) {
    throw invalid(
      `the signed statement's _type is ${JSON.stringify(data._type)}, not ${STATEMENT_TYPE}`,
      '/_type',
    );
  }
  if (data.predicateType === LEGACY_PREDICATE_TYPE) {
    throw unsupported(
      `the statement uses model_signing's pre-1.0 predicate ${LEGACY_PREDICATE_TYPE}; sign the model again`,
      '/predicateType',
    );
  }
  if (data.predicateType !== PREDICATE_TYPE) {
    throw invalid(
      `the signed statement's predicateType is ${JSON.stringify(data.predicateType)}, not ${PREDICATE_TYPE}`,
      '/predicateType',
    );
  }
  const subject = readSubject(data.subject);
  const predicate = data.predicate;
  if (!isObject(predicate)) throw invalid('the signed statement has no predicate', '/predicate');
  const serialization = readSerialization(predicate.serialization);
  const resources = readResources(predicate.resources);
  const root = rootDigest(resources);
  if (root !== subject.digest) {
    throw invalid(
      `the statement is inconsistent: its files' digests give ${root}, its subject says ${subject.digest}`,
      '/subject/0/digest/sha256',
    );
  }
  return { subject, resources, serialization };
}

function readSubject(subject: unknown): Statement['subject'] {
  if (!Array.isArray(subject) || subject.length !== 1 || !isObject(subject[0])) {
    throw invalid('the signed statement must have exactly one subject', '/subject');
  }
  const [only] = subject as [JsonObject];
  const digest = isObject(only.digest) ? only.digest.sha256 : undefined;
  if (typeof digest !== 'string' || !HEX_SHA256.test(digest)) {
    throw invalid("the statement's subject has no sha256 digest", '/subject/0/digest');
  }
  return { name: typeof only.name === 'string' ? only.name : '', digest: digest.toLowerCase() };
}

function readSerialization(value: unknown): Serialization {
  const at = '/predicate/serialization';
  if (!isObject(value)) throw invalid('the statement records no serialization', at);
  if (value.method === 'shards') {
    throw unsupported(
      'the model was signed file shard by file shard (method "shards"); model_signing\'s verify key checks whole files only',
      `${at}/method`,
    );
  }
  if (value.method !== 'files')
    throw invalid(`unknown serialization method ${JSON.stringify(value.method)}`, `${at}/method`);
  if (value.hash_type !== 'sha256') {
    throw unsupported(
      `the files were hashed with ${JSON.stringify(value.hash_type)}; only sha256 is verified (as by model_signing's verify key)`,
      `${at}/hash_type`,
    );
  }
  if (value.allow_symlinks !== undefined && typeof value.allow_symlinks !== 'boolean') {
    throw invalid('allow_symlinks is not a boolean', `${at}/allow_symlinks`);
  }
  const ignore = value.ignore_paths ?? [];
  if (!Array.isArray(ignore) || !ignore.every((p): p is string => typeof p === 'string')) {
    throw invalid('ignore_paths is not a list of paths', `${at}/ignore_paths`);
  }
  return {
    method: 'files',
    hash_type: 'sha256',
    allow_symlinks: value.allow_symlinks === true,
    ignore_paths: ignore,
  };
}

function readResources(value: unknown): Resource[] {
  if (!Array.isArray(value)) throw invalid('the statement lists no resources', '/predicate/resources');
  const seen = new Set<string>();
  return value.map((r: unknown, i): Resource => {
    const at = `/predicate/resources/${i}`;
    if (!isObject(r) || typeof r.name !== 'string') throw invalid(`resource ${i} has no name`, at);
    if (r.algorithm !== 'sha256')
      throw invalid(
        `resource ${JSON.stringify(r.name)} is hashed with ${JSON.stringify(r.algorithm)}, not sha256`,
        `${at}/algorithm`,
      );
    if (typeof r.digest !== 'string' || !HEX_SHA256.test(r.digest))
      throw invalid(`resource ${JSON.stringify(r.name)} has no sha256 digest`, `${at}/digest`);
    if (r.name === '.') {
      throw unsupported('the signature is of a single file, not of a folder', `${at}/name`);
    }
    const problem = pathProblem(r.name);
    if (problem) throw invalid(`resource ${JSON.stringify(r.name)}: ${problem}`, `${at}/name`);
    if (seen.has(r.name)) throw invalid(`resource ${JSON.stringify(r.name)} is listed twice`, `${at}/name`);
    seen.add(r.name);
    return { name: r.name, digest: r.digest.toLowerCase() };
  });
}

/** Why a signed path cannot name a file inside the model folder; null when it can. */
export function pathProblem(name: string): string | null {
  if (name === '') return 'an empty path';
  if (name.startsWith('/')) return 'an absolute path';
  if (name.includes('\0')) return 'a path with a NUL byte';
  const parts = name.split('/');
  if (parts.includes('..')) return 'a path that leaves the folder (..)';
  if (parts.some((p) => p === '' || p === '.'))
    return 'a path that is not in normal form (an empty or "." component)';
  return null;
}
