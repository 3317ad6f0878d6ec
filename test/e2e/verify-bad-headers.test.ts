/**
 * Every bad safetensors header of issue 2, end to end: the built CLI on an adapter carrying it. The
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

const CASES: [what: string, bytes: Uint8Array, code: string][] = [
  ['header length 0', file('', 0, 0n), 'SAFETENSORS_HEADER_LENGTH'],
  ['header length over 100 MB', file('{}', 0, 100_000_001n), 'SAFETENSORS_HEADER_LENGTH'],
  ['header length past the end of the file', file('{}', 0, 1000n), 'SAFETENSORS_HEADER_LENGTH'],
  ['header length 2^64−1', file('{}', 0, 2n ** 64n - 1n), 'SAFETENSORS_HEADER_LENGTH'],
  ['header not UTF-8', file(Uint8Array.of(0x7b, 0xff, 0x7d)), 'SAFETENSORS_HEADER_UTF8'],
  ['header not JSON', file('{"a":'), 'SAFETENSORS_HEADER_JSON'],
  ['header a JSON array', file('[]'), 'SAFETENSORS_HEADER_NOT_OBJECT'],
  ['garbage after the JSON', file('{} x'), 'SAFETENSORS_HEADER_JSON'],
  ['a leading BOM', file('\uFEFF{}'), 'SAFETENSORS_HEADER_JSON'],
  ['an unknown dtype', one('F33', '[1]', '[0,4]', 4), 'SAFETENSORS_DTYPE'],
  ['a lowercase dtype', one('f32', '[1]', '[0,4]', 4), 'SAFETENSORS_DTYPE'],
  ['a negative shape', one('F32', '[-1]', '[0,4]', 4), 'SAFETENSORS_SHAPE'],
  ['a float shape', one('F32', '[1.5]', '[0,4]', 4), 'SAFETENSORS_SHAPE'],
  [
    'offsets with a gap',
    file(`{"a":${entry('F32', '[1]', '[0,4]')},"b":${entry('F32', '[1]', '[8,12]')}}`, 12),
    'SAFETENSORS_OFFSETS',
  ],
  [
    'offsets that overlap',
    file(`{"a":${entry('F32', '[1]', '[0,4]')},"b":${entry('F32', '[1]', '[2,6]')}}`, 6),
    'SAFETENSORS_OFFSETS',
  ],
  ['offsets not starting at 0', one('F32', '[1]', '[4,8]', 8), 'SAFETENSORS_OFFSETS'],
  ['offsets ending before they begin', one('F32', '[0]', '[4,0]', 4), 'SAFETENSORS_OFFSETS'],
  ['offsets beyond the file', one('F32', '[1]', '[0,4]', 2), 'SAFETENSORS_OFFSETS'],
  ['byte length ≠ shape × dtype size', one('F32', '[2]', '[0,4]', 4), 'SAFETENSORS_SIZE'],
  ['F4 with an odd element count', one('F4', '[3]', '[0,2]', 2), 'SAFETENSORS_SIZE'],
  [
    'a duplicate tensor key',
    file(`{"a":${entry('F32', '[1]', '[0,4]')},"a":${entry('F32', '[1]', '[4,8]')}}`, 8),
    'SAFETENSORS_DUPLICATE_KEY',
  ],
  ['a duplicate __metadata__', file('{"__metadata__":{},"__metadata__":{}}'), 'SAFETENSORS_DUPLICATE_KEY'],
  ['a non-string metadata value', file('{"__metadata__":{"a":1}}'), 'SAFETENSORS_METADATA'],
  ['trailing bytes after the last tensor', one('F32', '[1]', '[0,4]', 5), 'SAFETENSORS_TRAILING'],
  ['an empty file', new Uint8Array(0), 'SAFETENSORS_TRUNCATED'],
  ['a 7-byte file', new Uint8Array(7), 'SAFETENSORS_TRUNCATED'],
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

  it.each(CASES)('%s: %s, exit 1', async (what, bytes, code) => {
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
