/**
 * The whole verifier under random input (fast-check): a valid adapter whose adapter_config.json,
 * metadata.json and weights are mutated at random, or removed, always yields a report; every finding
 * has a code verify documents, about a file of the adapter; nothing is thrown, no INTERNAL error, and
 * no run takes long.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { SAFETENSORS_ERROR_CODES } from '../../src/formats/safetensors.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import { writePeftAdapter } from '../../src/testkit/peft-adapter.js';
import { verifyAdapter } from '../../src/verify.js';
import { JSON_STRUCTURE } from '../helpers/json-pieces.js';
import { tempDir } from '../helpers/tmp.js';

/** Every code verify can report for a safetensors adapter. */
const KNOWN_CODES: ReadonlySet<string> = new Set<string>([
  ...SAFETENSORS_ERROR_CODES,
  'LAYOUT_MISSING',
  'LAYOUT_NOT_FILE',
  'LAYOUT_SPECIAL_FILE',
  'LAYOUT_SYMLINK',
  'LAYOUT_SUBDIRECTORY',
  'FILE_UNCOVERED',
  'CONFIG_JSON',
  'CONFIG_INVALID',
  'CONFIG_UNSUPPORTED',
  'CONFIG_PATTERN_UNUSED',
  'CONFIG_PATTERN_AMBIGUOUS',
  'TENSOR_DTYPE',
  'TENSOR_UNSUPPORTED',
  'TENSOR_NAME',
  'TENSOR_UNEXPECTED',
  'TENSOR_DUPLICATE',
  'TENSOR_UNPAIRED',
  'TENSOR_SHAPE',
  'TENSOR_UNTARGETED',
  'TENSOR_RANK',
  'TENSOR_NONE',
  'TARGET_UNMATCHED',
  'METADATA_JSON',
  'METADATA_INVALID',
  'ADAPTER_ID_MISMATCH',
  'CHECKSUM_MISMATCH',
  'CHECKSUM_FILE_MISSING',
  'CHECKSUM_WEIGHTS_UNCOVERED',
  'CHECKSUM_SELF',
]);

const CONFIG = 'adapter_config.json';
const METADATA = 'metadata.json';
const WEIGHTS = 'adapter_model.safetensors';
const FILES = [CONFIG, METADATA, WEIGHTS] as const;
type FileName = (typeof FILES)[number];

/** Pieces of JSON and of PEFT that reach the semantic checks more often than random bytes. */
const TOKENS = [
  '"',
  ...JSON_STRUCTURE,
  'null',
  'true',
  '-1',
  '0',
  '1.5',
  '1e309',
  '8',
  '64',
  '""',
  '"\\u0000"',
  '"\\ud800"',
  '"__proto__"',
  '"constructor"',
  '"F16"',
  '"f32"',
  '"I8"',
  '"LORA"',
  '"q_proj"',
  '"all-linear"',
  '".*"',
  '"("',
  '"lora_A"',
  '"lora_B"',
  '".lora_A.weight"',
  '"base_model.model."',
  '"sha256:"',
  '"0.1.0"',
  '"2026-13-40T00:00:00Z"',
  '[0,0]',
  '[1,2]',
  '{}',
  '\uFEFF',
  '\u00ff',
];

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'replace'; at: number; length: number; text: string }
  | { kind: 'append'; bytes: number[] }
  | { kind: 'json'; at: number; value: unknown };

/** `at` is a fraction of the file (or, for the weights, of its header), so every size is reachable. */
// an integer scaled: fc.double favours 0, 1 and other edges, which would pin every mutation to the ends
const fraction = fc.integer({ min: 0, max: 1_000_000 }).map((n) => n / 1_000_000);
/** Values a JSON mutation puts in place of one value of the document. */
const jsonValueArb = fc.constantFrom<unknown>(
  null,
  true,
  -1,
  0,
  1.5,
  1e300,
  8,
  '',
  'x',
  'LORA',
  [],
  {},
  ['q_proj'],
  {
    a: 1,
  },
);

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  // the document still JSON, one value replaced: what reaches the schema and semantic checks
  fc.record({ kind: fc.constant('json' as const), at: fraction, value: jsonValueArb }),
  fc.record({ kind: fc.constant('flip' as const), at: fraction, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fraction }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fraction,
    text: fc.oneof(fc.constantFrom(...TOKENS), fc.string({ maxLength: 4 })),
  }),
  fc.record({
    kind: fc.constant('replace' as const),
    at: fraction,
    length: fc.integer({ min: 1, max: 12 }),
    text: fc.constantFrom(...TOKENS),
  }),
  fc.record({
    kind: fc.constant('append' as const),
    bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 }),
  }),
);

type FileChange = { kind: 'keep' } | { kind: 'remove' } | { kind: 'mutate'; mutations: Mutation[] };
const changeArb: fc.Arbitrary<FileChange> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ kind: 'keep' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'remove' as const }) },
  {
    weight: 6,
    arbitrary: fc
      .array(mutationArb, { minLength: 1, maxLength: 4 })
      .map((mutations) => ({ kind: 'mutate' as const, mutations })),
  },
);

/** The weights: their header text mutated, its length field kept or made to fit, the data cut or grown. */
const weightsArb = fc.record({
  change: changeArb,
  fitLength: fc.boolean(),
  data: fc.oneof(
    { weight: 4, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.record({ cut: fraction }) },
    { weight: 1, arbitrary: fc.record({ grow: fc.integer({ min: 1, max: 8 }) }) },
  ),
});
type WeightsChange = typeof weightsArb extends fc.Arbitrary<infer T> ? T : never;

const caseArb = fc.record({
  config: changeArb,
  metadata: changeArb,
  weights: weightsArb,
  // record the checksums of the mutated files, so that what lies behind them is checked too
  rechecksum: fc.boolean(),
});

const encoder = new TextEncoder();

function mutate(bytes: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let out: Uint8Array = Uint8Array.from(bytes);
  for (const m of mutations) {
    const at = (f: number): number => Math.min(out.length, Math.floor(f * out.length));
    if (m.kind === 'flip') {
      const i = Math.min(at(m.at), out.length - 1);
      if (i >= 0) out[i] = (out[i] ?? 0) ^ (1 << m.bit);
    } else if (m.kind === 'truncate') {
      out = out.subarray(0, at(m.at));
    } else if (m.kind === 'append') {
      out = Uint8Array.from([...out, ...m.bytes]);
    } else if (m.kind === 'json') {
      out = replaceJsonValue(out, m.at, m.value);
    } else {
      const i = at(m.at);
      const cut = m.kind === 'replace' ? Math.min(m.length, out.length - i) : 0;
      const text = encoder.encode(m.text);
      const next = new Uint8Array(out.length - cut + text.length);
      next.set(out.subarray(0, i));
      next.set(text, i);
      next.set(out.subarray(i + cut), i + text.length);
      out = next;
    }
  }
  return out;
}

/** The document with its value number `at × count` (depth first) replaced; as it was if not JSON. */
function replaceJsonValue(bytes: Uint8Array, at: number, value: unknown): Uint8Array {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return bytes;
  }
  const slots: { holder: Record<string, unknown>; key: string }[] = [];
  const walk = (v: unknown): void => {
    if (typeof v !== 'object' || v === null) return;
    for (const key of Object.keys(v)) {
      slots.push({ holder: v as Record<string, unknown>, key });
      walk((v as Record<string, unknown>)[key]);
    }
  };
  walk(doc);
  const slot = slots[Math.min(slots.length - 1, Math.floor(at * slots.length))];
  if (!slot) return encoder.encode(JSON.stringify(value));
  slot.holder[slot.key] = value;
  return encoder.encode(JSON.stringify(doc));
}

describe('verifyAdapter under random mutations (fast-check)', () => {
  let original: Record<FileName, Uint8Array>;
  let dir: string;
  let headerEnd: number;
  const seen = new Set<string>();

  beforeAll(async () => {
    dir = join(await tempDir('codi-verify-fuzz-'), 'tiny-qwen2-lora');
    await writePeftAdapter(dir, exampleSpec());
    await rm(join(dir, 'README.md'));
    original = {
      [CONFIG]: await readFile(join(dir, CONFIG)),
      [METADATA]: await readFile(join(dir, METADATA)),
      [WEIGHTS]: await readFile(join(dir, WEIGHTS)),
    };
    headerEnd = 8 + Number(Buffer.from(original[WEIGHTS]).readBigUInt64LE(0));
  });

  /** The weights' header text is what mutations aim at: the data is only hashed. */
  function weightsBytes(w: WeightsChange): Uint8Array {
    const whole = original[WEIGHTS];
    const header = whole.subarray(8, headerEnd);
    let data = whole.subarray(headerEnd);
    const text = w.change.kind === 'mutate' ? mutate(header, w.change.mutations) : header;
    if (w.data && 'cut' in w.data) data = data.subarray(0, Math.floor(w.data.cut * data.length));
    if (w.data && 'grow' in w.data) data = Uint8Array.from([...data, ...new Uint8Array(w.data.grow)]);
    const out = Buffer.alloc(8 + text.length + data.length);
    out.writeBigUInt64LE(BigInt(w.fitLength ? text.length : header.length));
    out.set(text, 8);
    out.set(data, 8 + text.length);
    return out;
  }

  it("always a report: known codes about the adapter's files, nothing thrown, quickly", async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const changes: Record<FileName, FileChange> = {
          [CONFIG]: c.config,
          [METADATA]: c.metadata,
          [WEIGHTS]: c.weights.change,
        };
        const written: Partial<Record<FileName, Uint8Array>> = {};
        for (const name of FILES) {
          const change = changes[name];
          if (change.kind === 'remove') {
            await rm(join(dir, name), { force: true });
            continue;
          }
          const bytes =
            name === WEIGHTS
              ? weightsBytes(c.weights)
              : change.kind === 'keep'
                ? original[name]
                : mutate(original[name], change.mutations);
          written[name] = bytes;
          await writeFile(join(dir, name), bytes);
        }
        const metadata = written[METADATA];
        if (c.rechecksum && c.metadata.kind === 'keep' && metadata) {
          const meta = JSON.parse(Buffer.from(metadata).toString('utf8')) as {
            checksum: { files: Record<string, string> };
          };
          meta.checksum.files = {};
          for (const name of [CONFIG, WEIGHTS] as const) {
            const bytes = written[name];
            if (bytes) meta.checksum.files[name] = sha256Bytes(bytes);
          }
          await writeFile(join(dir, METADATA), JSON.stringify(meta));
        }

        const started = performance.now();
        const report = await verifyAdapter(dir);
        expect(performance.now() - started).toBeLessThan(5000);
        for (const f of report.findings) {
          expect(KNOWN_CODES, `${f.code}: ${f.message}`).toContain(f.code);
          expect(['error', 'warning']).toContain(f.level);
          expect(f.message.length).toBeGreaterThan(0);
          // named relative to the adapter (a listed name may be anything metadata.json says)
          expect(f.file.startsWith('/'), f.file).toBe(false);
          expect(f.message).not.toContain(dir);
          seen.add(f.code);
        }
        expect(report.ok).toBe(!report.findings.some((f) => f.level === 'error'));
        expect(report.checks.map((ch) => ch.name)).toEqual([
          'layout',
          'config',
          'weights',
          'tensors',
          'metadata',
          'checksums',
        ]);
      }),
      // a fixed seed: the same 300 cases every run, so the coverage asserted below cannot come and go
      { numRuns: 300, seed: 20261207 },
    );
    console.log([...seen].sort().join(' '));
    // the mutations reach well past the first check of each file
    for (const code of [
      'LAYOUT_MISSING',
      'CONFIG_JSON',
      'CONFIG_INVALID',
      'METADATA_JSON',
      'METADATA_INVALID',
      'CHECKSUM_MISMATCH',
      'SAFETENSORS_HEADER_JSON',
      'SAFETENSORS_OFFSETS',
      'TENSOR_UNPAIRED',
    ]) {
      expect(seen, code).toContain(code);
    }
  }, 120_000);
});
