import {
  chmod,
  copyFile,
  mkdir,
  readdir,
  readFile,
  rename,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { baseSha256, checkBaseIdentity, defaultStateDir, recordedBaseOf } from '../../src/base-identity.js';
import { sha256Bytes } from '../../src/checksum.js';
import { editMetadataText, parseMetadata, withBase, type AdapterMetadata } from '../../src/metadata.js';
import { rejected } from '../helpers/errors.js';
import { tempDir } from '../helpers/tmp.js';

let dir: string;
let state: string;

beforeAll(async () => {
  dir = await tempDir('codi-base-identity-');
  state = join(dir, 'state');
});

async function file(name: string, bytes: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

const metadata = (base?: AdapterMetadata['base']): AdapterMetadata => ({
  schema_version: 1,
  id: 'a',
  version: '0.1.0',
  base_model: 'm',
  created_at: '2026-11-20T10:00:00Z',
  training: { dataset: 'd' },
  checksum: `sha256:${'0'.repeat(64)}`,
  ...(base ? { base } : {}),
});

describe('baseSha256', () => {
  it("is the file's sha256; computed once, then known while the file is unchanged", async () => {
    const path = await file('one.gguf', 'GGUF one');
    const first = await baseSha256(path, { stateDir: state });
    expect(first).toEqual({ sha256: sha256Bytes(Buffer.from('GGUF one')), cached: false });
    expect(await baseSha256(path, { stateDir: state })).toEqual({ ...first, cached: true });
    // through a symbolic link: the same file
    const link = join(dir, 'link.gguf');
    await symlink(path, link);
    expect(await baseSha256(link, { stateDir: state })).toEqual({ ...first, cached: true });
  });

  it('writes the cache entry 0600 in its own folder, keyed by device and inode', async () => {
    const path = await file('two.gguf', 'GGUF two');
    const st = await stat(path);
    await baseSha256(path, { stateDir: state });
    const entry = join(state, 'base-sha256', `${st.dev}-${st.ino}.json`);
    expect((await stat(entry)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(entry, 'utf8'))).toMatchObject({
      sha256: sha256Bytes(Buffer.from('GGUF two')),
      size: String(st.size),
      path,
    });
  });

  it('computes it again after a touch, a chmod, a rewrite or a replacement', async () => {
    const path = await file('three.gguf', 'GGUF three');
    expect((await baseSha256(path, { stateDir: state })).cached).toBe(false);
    const later = new Date(Date.now() + 10_000);
    await utimes(path, later, later);
    expect((await baseSha256(path, { stateDir: state })).cached).toBe(false);
    await chmod(path, 0o600);
    expect((await baseSha256(path, { stateDir: state })).cached).toBe(false);
    await writeFile(path, 'GGUF THREE');
    expect(await baseSha256(path, { stateDir: state })).toEqual({
      sha256: sha256Bytes(Buffer.from('GGUF THREE')),
      cached: false,
    });
    await copyFile(path, `${path}.new`);
    await rename(`${path}.new`, path);
    expect((await baseSha256(path, { stateDir: state })).cached).toBe(false);
  });

  it('a state directory it cannot write: the hash all the same', async () => {
    const blocked = await file('blocked', 'a file, not a folder');
    const path = await file('four.gguf', 'GGUF four');
    expect(await baseSha256(path, { stateDir: blocked })).toEqual({
      sha256: sha256Bytes(Buffer.from('GGUF four')),
      cached: false,
    });
  });

  it('a missing base is an environment error (exit 3); a folder is not a base', async () => {
    const missing = await rejected(baseSha256(join(dir, 'nope.gguf'), { stateDir: state }));
    expect(missing.exitCode).toBe(3);
    await mkdir(join(dir, 'folder.gguf'));
    expect((await rejected(baseSha256(join(dir, 'folder.gguf'), { stateDir: state }))).code).toBe(
      'PATH_NOT_FILE',
    );
  });

  it('the state directory: CODI_STATE_DIR, else run’s default', () => {
    const saved = process.env.CODI_STATE_DIR;
    try {
      process.env.CODI_STATE_DIR = '/srv/state';
      expect(defaultStateDir()).toBe('/srv/state');
      process.env.CODI_STATE_DIR = '';
      expect(defaultStateDir()).toBe('/tmp/codi-adapter');
      delete process.env.CODI_STATE_DIR;
      expect(defaultStateDir()).toBe('/tmp/codi-adapter');
    } finally {
      if (saved === undefined) delete process.env.CODI_STATE_DIR;
      else process.env.CODI_STATE_DIR = saved;
    }
  });
});

describe('checkBaseIdentity', () => {
  it('the recorded base: nothing to say; another: BASE_MISMATCH naming both', async () => {
    const path = await file('five.gguf', 'GGUF five');
    const sha = sha256Bytes(Buffer.from('GGUF five'));
    expect((await checkBaseIdentity(path, metadata({ sha256: sha }), { stateDir: state })).findings).toEqual(
      [],
    );
    const other = 'f'.repeat(64);
    const r = await checkBaseIdentity(path, metadata({ sha256: other, name: 'Other 7B' }), {
      stateDir: state,
    });
    expect(r.findings.map((f) => [f.code, f.level, f.file, f.pointer])).toEqual([
      ['BASE_MISMATCH', 'error', 'metadata.json', '/base/sha256'],
    ]);
    expect(r.findings[0]?.message).toContain(sha);
    expect(r.findings[0]?.message).toContain(`${other} (Other 7B)`);
  });

  it('no recorded base: BASE_UNRECORDED, and the base is not hashed', async () => {
    const fresh = join(dir, 'state-unrecorded');
    const path = await file('six.gguf', 'GGUF six');
    const r = await checkBaseIdentity(path, metadata(), { stateDir: fresh });
    expect(r.findings.map((f) => [f.code, f.level])).toEqual([['BASE_UNRECORDED', 'warning']]);
    expect(r.sha256).toBeNull();
    await expect(readdir(fresh)).rejects.toThrow(/ENOENT/u);
    // no metadata at all: verify reports that; nothing here
    expect((await checkBaseIdentity(path, null, { stateDir: fresh })).findings).toEqual([]);
  });

  it('recordedBaseOf reads metadata.json base', () => {
    expect(recordedBaseOf(metadata())).toBeNull();
    expect(recordedBaseOf(null)).toBeNull();
    expect(recordedBaseOf(metadata({ sha256: 'a'.repeat(64), name: 'n' }))).toEqual({
      sha256: 'a'.repeat(64),
      name: 'n',
    });
  });
});

describe('metadata.json base', () => {
  const text = (data: unknown, indent: string | number = 2): string =>
    `${JSON.stringify(data, null, indent)}\n`;

  it('is written right after base_model, in the file’s own indentation and line ends', () => {
    const base = { sha256: 'b'.repeat(64), name: 'Qwen2.5 Coder 1.5B', file: 'q.gguf' };
    const crlf = text(metadata(), '\t').replace(/\n/gu, '\r\n');
    const out = editMetadataText(crlf, (d) => withBase(d, base), 'metadata.json');
    expect(out).toContain('\t"base_model": "m",\r\n\t"base": {\r\n\t\t"sha256": "');
    expect(out.endsWith('}\r\n')).toBe(true);
    expect(Object.keys(JSON.parse(out) as object)).toEqual([
      'schema_version',
      'id',
      'version',
      'base_model',
      'base',
      'created_at',
      'training',
      'checksum',
    ]);
    // a base recorded already is replaced in place, not added twice
    const again = editMetadataText(out, (d) => withBase(d, { sha256: 'c'.repeat(64) }), 'metadata.json');
    expect((JSON.parse(again) as AdapterMetadata).base).toEqual({ sha256: 'c'.repeat(64) });
  });

  it('its schema: sha256 required, 64 lowercase hex; name and file strings; x- extensions', () => {
    const codes = (base: unknown): string[] =>
      parseMetadata(text({ ...metadata(), base }), null).findings.map((f) => f.code);
    expect(codes({ sha256: 'a'.repeat(64), name: 'n', file: 'f.gguf', 'x-note': 1 })).toEqual([]);
    expect(codes({ sha256: 'A'.repeat(64) })).toContain('METADATA_INVALID');
    expect(codes({ name: 'n' })).toContain('METADATA_INVALID');
    expect(codes({ sha256: 'a'.repeat(64), size: 3 })).toContain('METADATA_INVALID');
    expect(codes('sha256:abc')).toContain('METADATA_INVALID');
  });

  it('an edit that would break the schema is an internal error, and nothing is returned', () => {
    expect(() =>
      editMetadataText(text(metadata()), (d) => withBase(d, { sha256: 'not hex' }), 'metadata.json'),
    ).toThrow(/would make metadata.json invalid/u);
  });
});
