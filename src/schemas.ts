import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Ajv2020, ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import type addFormatsModule from 'ajv-formats';

/** One schema violation: where (JSON pointer), which rule, and the offending value. */
export interface SchemaViolation {
  pointer: string;
  rule: string;
  message: string;
  value: unknown;
}

export type SchemaName = 'metadata' | 'adapter-config' | 'eval' | 'llm-assist';

const SCHEMA_DIR = new URL('../schemas/', import.meta.url);
const require = createRequire(import.meta.url);

let ajv: Ajv2020 | undefined;
const compiled = new Map<SchemaName, ValidateFunction>();

/**
 * The validators compiled at build time (scripts/compile-schemas.js), when this module runs from
 * dist/; from the TypeScript sources (tests) they are compiled on first use instead.
 */
const prebuilt: Partial<Record<SchemaName, ValidateFunction>> | null = (() => {
  try {
    return require('./schemas.validators.cjs') as Partial<Record<SchemaName, ValidateFunction>>;
  } catch {
    return null;
  }
})();

function instance(): Ajv2020 {
  if (!ajv) {
    // loaded only when no prebuilt validator exists (running from the sources): ajv is slow to load
    const { Ajv2020: Ajv } = require('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js');
    const formats = require('ajv-formats') as { default: typeof addFormatsModule.default };
    ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true, verbose: true });
    formats.default(ajv);
    // metadata.json refers to eval.json records by file name
    ajv.addSchema(loadSchema('eval'), 'eval.schema.json');
  }
  return ajv;
}

export function loadSchema(name: SchemaName): Record<string, unknown> {
  return JSON.parse(readFileSync(new URL(`${name}.schema.json`, SCHEMA_DIR), 'utf8')) as Record<
    string,
    unknown
  >;
}

function validator(name: SchemaName): ValidateFunction {
  const ready = prebuilt?.[name];
  if (ready) return ready;
  let fn = compiled.get(name);
  if (!fn) {
    const a = instance();
    fn = name === 'eval' ? a.getSchema('eval.schema.json') : a.compile(loadSchema(name));
    if (!fn) throw new Error(`schema ${name} did not compile`);
    compiled.set(name, fn);
  }
  return fn;
}

/** Validates `data` against a bundled schema; an empty list means valid. */
export function validateAgainst(name: SchemaName, data: unknown): SchemaViolation[] {
  const fn = validator(name);
  if (fn(data)) return [];
  // `if` and `propertyNames` only repeat what their inner rule already said
  return (fn.errors ?? [])
    .filter((e) => e.keyword !== 'if' && e.keyword !== 'propertyNames')
    .map((e) => describe(e, data));
}

function describe(error: ErrorObject, data: unknown): SchemaViolation {
  let pointer = error.instancePath;
  const params = error.params as Record<string, unknown>;
  let message = error.message ?? 'is invalid';
  if (error.keyword === 'required' && typeof params.missingProperty === 'string') {
    pointer = `${pointer}/${escapePointer(params.missingProperty)}`;
    message = 'is required';
  } else if (error.keyword === 'additionalProperties' && typeof params.additionalProperty === 'string') {
    pointer = `${pointer}/${escapePointer(params.additionalProperty)}`;
    message = 'is not an allowed property';
  } else if (error.keyword === 'enum' && Array.isArray(params.allowedValues)) {
    message = `must be one of ${params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  } else if (error.keyword === 'pattern' && typeof error.parentSchema?.description === 'string') {
    // a described pattern reads better than the regex itself (semver's is 200 characters)
    message = `must be ${error.parentSchema.description}`;
  } else if (error.keyword === 'const') {
    message = `must be ${JSON.stringify(params.allowedValue)}`;
  }
  if (error.propertyName !== undefined) {
    // a rule on a key (propertyNames): point at the key, and the key is the offending value
    const key = `${pointer}/${escapePointer(error.propertyName)}`;
    return { pointer: key, rule: error.keyword, message: `key ${message}`, value: error.propertyName };
  }
  return {
    pointer: pointer === '' ? '/' : pointer,
    rule: error.keyword,
    message,
    value: valueAt(data, pointer),
  };
}

function escapePointer(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** Resolves a JSON pointer; undefined where nothing is there (a missing property). */
export function valueAt(data: unknown, pointer: string): unknown {
  if (pointer === '' || pointer === '/') return data;
  let cur: unknown = data;
  for (const raw of pointer.slice(1).split('/')) {
    const token = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = Object.hasOwn(cur, token) ? (cur as Record<string, unknown>)[token] : undefined;
  }
  return cur;
}

/** `"/version: must match pattern … (rule: pattern, value: \"1.0\")"` */
export function formatViolation(v: SchemaViolation): string {
  const shown = v.value === undefined ? 'missing' : truncate(JSON.stringify(v.value));
  return `${v.pointer}: ${v.message} (rule: ${v.rule}, value: ${shown})`;
}

function truncate(text: string, max = 80): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
