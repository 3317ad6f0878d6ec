/**
 * Every kind of bad safetensors header, end to end: the built CLI on an adapter carrying it. The
 * parser's unit tests prove the checks; this proves a user gets the finding code, exit 1, one JSON
 * object and no stack trace. Cases run concurrently (one process each).
 */
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import { exampleSpec } from '../../src/testkit/examples.js';
import { writeMetadata } from '../../src/testkit/peft-adapter.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

/** A file: the 8-byte length (the header's own unless given), the header, then `data` zero bytes. */
function file(header: string | Uint8Array, data = 0, length?: bigint): Uint8Array {
  const h = typeof header === 'string' ? Buffer.from(header) : Buffer.from(header);
  const out = Buffer.alloc(8 + h.length + data);
  out.writeBigUInt64LE(length ?? BigInt(h.length));
  h.copy(out, 8);
  return out;
}

const entry = (dtype: string, shape: string, offsets: string): string =>
  `{"dtype":${JSON.stringify(dtype)},"shape":${shape},"data_offsets":${offsets}}`;
const one = (dtype: string, shape: string, offsets: string, data: number): Uint8Array =>
  file(`{"a":${entry(dtype, shape, offsets)}}`, data);
/** Two F32 tensors of one element, `a` and then `second`, at the offsets given. */
const two = (first: string, then: string, data: number, second = 'b'): Uint8Array =>
  file(`{"a":${entry('F32', '[1]', first)},${JSON.stringify(second)}:${entry('F32', '[1]', then)}}`, data);

const CASES: [what: string, code: string, bytes: Uint8Array][] = [
  ['header length 0', 'SAFETENSORS_HEADER_LENGTH', file('', 0, 0n)],
  ['header length over 100 MB', 'SAFETENSORS_HEADER_LENGTH', file('{}', 0, 100_000_001n)],
  ['header length past the end of the file', 'SAFETENSORS_HEADER_LENGTH', file('{}', 0, 1000n)],
  ['header length 2^64−1', 'SAFETENSORS_HEADER_LENGTH', file('{}', 0, 2n ** 64n - 1n)],
  ['header not UTF-8', 'SAFETENSORS_HEADER_UTF8', file(Uint8Array.of(0x7b, 0xff, 0x7d))],
  ['header not JSON', 'SAFETENSORS_HEADER_JSON', file('{"a":')],
  ['header a JSON array', 'SAFETENSORS_HEADER_NOT_OBJECT', file('[]')],
  ['garbage after the JSON', 'SAFETENSORS_HEADER_JSON', file('{} x')],
  ['a leading BOM', 'SAFETENSORS_HEADER_JSON', file('\uFEFF{}')],
  ['an unknown dtype', 'SAFETENSORS_DTYPE', one('F33', '[1]', '[0,4]', 4)],
  ['a lowercase dtype', 'SAFETENSORS_DTYPE', one('f32', '[1]', '[0,4]', 4)],
  ['a negative shape', 'SAFETENSORS_SHAPE', one('F32', '[-1]', '[0,4]', 4)],
  ['a float shape', 'SAFETENSORS_SHAPE', one('F32', '[1.5]', '[0,4]', 4)],
  ['offsets with a gap', 'SAFETENSORS_OFFSETS', two('[0,4]', '[8,12]', 12)],
  ['offsets that overlap', 'SAFETENSORS_OFFSETS', two('[0,4]', '[2,6]', 6)],
  ['offsets not starting at 0', 'SAFETENSORS_OFFSETS', one('F32', '[1]', '[4,8]', 8)],
  ['offsets ending before they begin', 'SAFETENSORS_OFFSETS', one('F32', '[0]', '[4,0]', 4)],
  ['offsets beyond the file', 'SAFETENSORS_OFFSETS', one('F32', '[1]', '[0,4]', 2)],
  ['byte length ≠ shape × dtype size', 'SAFETENSORS_SIZE', one('F32', '[2]', '[0,4]', 4)],
  ['F4 with an odd element count', 'SAFETENSORS_SIZE', one('F4', '[3]', '[0,2]', 2)],
  ['a duplicate tensor key', 'SAFETENSORS_DUPLICATE_KEY', two('[0,4]', '[4,8]', 8, 'a')],
  ['a duplicate __metadata__', 'SAFETENSORS_DUPLICATE_KEY', file('{"__metadata__":{},"__metadata__":{}}')],
  ['a non-string metadata value', 'SAFETENSORS_METADATA', file('{"__metadata__":{"a":1}}')],
  ['trailing bytes after the last tensor', 'SAFETENSORS_TRAILING', one('F32', '[1]', '[0,4]', 5)],
  ['an empty file', 'SAFETENSORS_TRUNCATED', new Uint8Array(0)],
  ['a 7-byte file', 'SAFETENSORS_TRUNCATED', new Uint8Array(7)],
];

interface Report {
  ok: boolean;
  findings: { level: string; code: string; file: string }[];
}

describe.concurrent('verify (built CLI) on every bad safetensors header', () => {
  let root: string;
  beforeAll(async () => {
    root = await tempDir('codi-bad-headers-');
  });

  it.each(CASES)('%s: %s, exit 1', async (what, code, bytes) => {
    const dir = join(root, what.replace(/[^a-z0-9]+/giu, '-'), 'tiny-qwen2-lora');
    await cp('examples/adapters/tiny-qwen2-lora', dir, { recursive: true });
    await writeFile(join(dir, 'adapter_model.safetensors'), bytes);
    // the checksums match the bad file: the header is the only thing wrong
    await writeMetadata(dir, exampleSpec(), {
      'adapter_config.json': sha256Bytes(await readFile(join(dir, 'adapter_config.json'))),
      'adapter_model.safetensors': sha256Bytes(bytes),
    });
    const r = await runCli(['verify', dir, '--json']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().startsWith('{')).toBe(true);
    const report = r.json as Report;
    expect(report.ok).toBe(false);
    expect(report.findings.map((f) => [f.level, f.code, f.file])).toEqual([
      ['error', code, 'adapter_model.safetensors'],
    ]);
  });
});
