import { describe, expect, it } from 'vitest';
import { expectedChecksums, parseMetadata, sha256Hex, sha256Ref } from '../../src/metadata.js';

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
