import { describe, expect, it } from 'vitest';
import {
  convertedMetadataText,
  expectedChecksums,
  parseMetadata,
  sha256Hex,
  sha256Ref,
} from '../../src/metadata.js';

const HEX = 'a'.repeat(64);
const valid = {
  schema_version: 1,
  id: 'qwen15b-lora-v0.1',
  version: '0.1.0',
  base_model: 'qwen2.5-coder-1.5b',
  created_at: '2026-11-20T10:00:00Z',
  training: { dataset: 'codi-rationales-2026-10', epochs: 3, anything: ['free', 'form'] },
  checksum: { algorithm: 'sha256', files: { 'adapter_model.safetensors': HEX, 'adapter_config.json': HEX } },
  evaluations: [],
};

const parse = (data: unknown) => parseMetadata(JSON.stringify(data), 'adapter_model.safetensors');

describe('parseMetadata', () => {
  it('accepts the documented example and expands the checksums', () => {
    const p = parse(valid);
    expect(p.findings).toEqual([]);
    expect([...p.checksums.keys()]).toEqual(['adapter_model.safetensors', 'adapter_config.json']);
  });

  it('accepts the short checksum form as the weights file', () => {
    const p = parse({ ...valid, checksum: `sha256:${HEX}` });
    expect(p.findings).toEqual([]);
    expect([...p.checksums]).toEqual([['adapter_model.safetensors', HEX]]);
  });

  it.each([
    ['schema_version', { schema_version: 2 }, '/schema_version', 'const'],
    ['id pattern', { id: 'Bad_ID' }, '/id', 'pattern'],
    ['id ..', { id: '..' }, '/id', 'not'],
    ['version not semver', { version: '1.0' }, '/version', 'pattern'],
    ['created_at not a date-time', { created_at: 'yesterday' }, '/created_at', 'format'],
    ['dataset missing', { training: { epochs: 3 } }, '/training/dataset', 'required'],
    ['checksum short form', { checksum: 'md5:abc' }, '/checksum', 'pattern'],
    [
      'checksum algorithm',
      { checksum: { algorithm: 'md5', files: { a: HEX } } },
      '/checksum/algorithm',
      'const',
    ],
    [
      'checksum hex',
      { checksum: { algorithm: 'sha256', files: { a: 'XYZ' } } },
      '/checksum/files/a',
      'pattern',
    ],
    [
      'checksum path',
      { checksum: { algorithm: 'sha256', files: { '../x': HEX } } },
      '/checksum/files/..~1x',
      'pattern',
    ],
    ['unknown key', { chekcsum: 1 }, '/chekcsum', 'additionalProperties'],
    ['evaluation', { evaluations: [{ suite: 's' }] }, '/evaluations/0/evaluated_at', 'required'],
  ])('reports %s with pointer, rule and value', (_name, patch, pointer, rule) => {
    const p = parse({ ...valid, ...patch });
    const f = p.findings.find((x) => x.pointer === pointer);
    expect(f, JSON.stringify(p.findings)).toBeDefined();
    expect(f?.code).toBe('METADATA_INVALID');
    expect(f?.message).toContain(`rule: ${rule}`);
    expect(f?.message).toContain('value:');
  });

  it('names the offending value', () => {
    const f = parse({ ...valid, version: '1.0' }).findings[0];
    expect(f?.message).toContain('value: "1.0"');
  });

  it('reports a missing required key as missing', () => {
    const { id: _id, ...noId } = valid;
    const f = parse(noId).findings[0];
    expect(f?.pointer).toBe('/id');
    expect(f?.message).toContain('value: missing');
  });

  it('requires the weights file to be covered', () => {
    const p = parse({ ...valid, checksum: { algorithm: 'sha256', files: { 'adapter_config.json': HEX } } });
    expect(p.findings.map((f) => f.code)).toEqual(['CHECKSUM_WEIGHTS_UNCOVERED']);
  });

  it('reports invalid JSON', () => {
    expect(parseMetadata('{', 'adapter_model.safetensors').findings[0]?.code).toBe('METADATA_JSON');
  });

  it('allows x- extension keys', () => {
    expect(parse({ ...valid, 'x-team': 'codi' }).findings).toEqual([]);
  });
});

describe('duplicate keys', () => {
  it('refuses a metadata.json that says two things (JSON.parse would keep the last)', () => {
    const text =
      '{"schema_version": 1, "checksum": "sha256:' +
      'a'.repeat(64) +
      '", "checksum": "sha256:' +
      'b'.repeat(64) +
      '"}';
    const p = parseMetadata(text, 'adapter_model.safetensors');
    expect(p.findings[0]?.code).toBe('METADATA_JSON');
    expect(p.findings[0]?.message).toMatch(/duplicate/i);
  });
});

describe('the checksum format', () => {
  it('sha256:<hex> is written and read in one place', () => {
    expect(sha256Ref(HEX)).toBe(`sha256:${HEX}`);
    expect(sha256Hex(sha256Ref(HEX))).toBe(HEX);
    expect(sha256Hex(`md5:${HEX}`)).toBeNull();
  });

  it('expands the short form to the weights file, and leaves metadata.json out of the files map', () => {
    expect([...expectedChecksums(`sha256:${HEX}`, 'adapter_model.bin')]).toEqual([
      ['adapter_model.bin', HEX],
    ]);
    expect(expectedChecksums(`sha256:${HEX}`, null).size).toBe(0);
    const files = { 'adapter_config.json': HEX, 'metadata.json': HEX };
    expect([...expectedChecksums({ algorithm: 'sha256', files }, 'adapter_model.safetensors')]).toEqual([
      ['adapter_config.json', HEX],
    ]);
  });
});

describe('convertedMetadataText (mount --to-safetensors)', () => {
  const BIN = 'b'.repeat(64);
  const ST = 'c'.repeat(64);
  const from = {
    file: 'adapter_model.bin',
    sha256: BIN,
    converter: 'codi-adapter 0.2.0',
    converted_at: '2026-12-07T10:00:00Z',
  };
  const to = { file: 'adapter_model.safetensors', sha256: ST };
  const binMetadata = {
    ...valid,
    checksum: { algorithm: 'sha256', files: { 'adapter_config.json': HEX, 'adapter_model.bin': BIN } },
    'x-team': 'nlp',
  };

  it('puts the new file where the .bin was listed and converted_from after the checksum', () => {
    const text = convertedMetadataText(`${JSON.stringify(binMetadata, null, 2)}\n`, from, to);
    const data = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(data)).toEqual([
      'schema_version',
      'id',
      'version',
      'base_model',
      'created_at',
      'training',
      'checksum',
      'converted_from',
      'evaluations',
      'x-team',
    ]);
    expect(data.checksum).toEqual({
      algorithm: 'sha256',
      files: { 'adapter_config.json': HEX, 'adapter_model.safetensors': ST },
    });
    expect(data.converted_from).toEqual(from);
    expect(text.endsWith('}\n')).toBe(true);
    const parsed = parseMetadata(text, 'adapter_model.safetensors');
    expect(parsed.findings).toEqual([]);
    expect(parsed.metadata?.converted_from).toEqual(from);
  });

  it('keeps the short form, the indentation and CRLF line endings; replaces an older converted_from', () => {
    const source = JSON.stringify(
      { ...valid, checksum: `sha256:${BIN}`, converted_from: { ...from, sha256: HEX } },
      null,
      '\t',
    );
    const text = convertedMetadataText(source.replace(/\n/gu, '\r\n'), from, to);
    expect(text).toContain(`\r\n\t"checksum": "sha256:${ST}",\r\n\t"converted_from": {`);
    expect(text.endsWith('}')).toBe(true);
    expect(text.match(/converted_from/gu)).toHaveLength(1);
    expect(parseMetadata(text, 'adapter_model.safetensors').findings).toEqual([]);
  });

  it.each([
    [
      'no sha256',
      { file: 'adapter_model.bin', converter: 'x', converted_at: '2026-12-07T10:00:00Z' },
      'required',
    ],
    ['a sha256 that is not hex', { ...from, sha256: 'z'.repeat(64) }, 'pattern'],
    ['a path as the file', { ...from, file: '../adapter_model.bin' }, 'pattern'],
    ['a date that is not one', { ...from, converted_at: 'today' }, 'format'],
    ['another key', { ...from, by: 'me' }, 'additionalProperties'],
  ])('the schema refuses converted_from with %s', (_name, convertedFrom, rule) => {
    const p = parse({ ...valid, converted_from: convertedFrom });
    expect(p.findings.map((f) => f.code)).toContain('METADATA_INVALID');
    expect(p.findings.map((f) => f.message).join('\n')).toContain(`rule: ${rule}`);
  });
});
