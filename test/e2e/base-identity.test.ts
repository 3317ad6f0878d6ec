/**
 * Adapters bound to their exact base, through the built CLI: `mount --base` and `promote --base` record
 * the base GGUF's sha256 and name; `verify --base` and `convert` refuse another base of the same shapes
 * (BASE_MISMATCH, both hashes named); an adapter that records none still works, with a warning; the
 * base's hash is kept in the state directory and computed again when the file changes.
 */
import { chmod, copyFile, readdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Bytes } from '../../src/checksum.js';
import type { CatalogListing } from '../../src/catalog/list.js';
import type { MountResult } from '../../src/catalog/mount.js';
import type { PromoteResult } from '../../src/promote.js';
import { parseRules } from '../../src/rules.js';
import { writeTinyModel } from '../../src/testkit/tiny-model.js';
import { makeAdapter, makeVolume, openTempDir } from '../helpers/catalog.js';
import { runCli, type CliResult } from '../helpers/cli.js';

const BASE = 'examples/base/tiny-qwen2.gguf';
const EXAMPLE_RULES = 'examples/patterns/rules.yml';
const EXAMPLE_EVAL = 'examples/eval.json';

interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; hint?: string };
}
interface ReportJson {
  ok: boolean;
  findings: { code: string; level: string; message: string; file: string }[];
}

let dir: string;
/** the example base and its sha256 */
let baseSha: string;
/** another tiny qwen2 base: the same shapes, other weights (another seed) */
let other: string;
let otherSha: string;

beforeAll(async () => {
  dir = await openTempDir('codi-base-identity-');
  baseSha = sha256Bytes(await readFile(BASE));
  other = join(dir, 'other-tiny-qwen2.gguf');
  await writeTinyModel(other, { seed: 7, name: 'other-tiny' });
  otherSha = sha256Bytes(await readFile(other));
});

const metadataOf = async (adapter: string): Promise<Record<string, unknown>> =>
  JSON.parse(await readFile(join(adapter, 'metadata.json'), 'utf8')) as Record<string, unknown>;

/** The CLI with a state directory of its own (and the trace on, to see whether the base is hashed). */
function cli(args: string[], stateDir: string): Promise<CliResult> {
  return runCli(args, { env: { CODI_STATE_DIR: stateDir, CODI_TRACE: '1' } });
}

const hashed = (r: CliResult): boolean => /base: hashing/u.test(r.stderr);

describe('verify --base and convert: the recorded base, and only it', () => {
  it('an adapter bound to another base: BASE_MISMATCH (exit 1) naming both hashes; no GGUF written', async () => {
    const state = await openTempDir('codi-state-');
    const adapter = await makeAdapter(dir, 'bound-other', { base: { sha256: otherSha, name: 'other-tiny' } });
    const v = await cli(['verify', adapter, '--base', BASE, '--json'], state);
    expect(v.code).toBe(1);
    const report = v.json as ReportJson;
    const mismatch = report.findings.find((f) => f.code === 'BASE_MISMATCH');
    expect(mismatch).toMatchObject({ level: 'error', file: 'metadata.json' });
    expect(mismatch?.message).toContain(baseSha);
    expect(mismatch?.message).toContain(otherSha);
    // the shapes match: only the identity tells the bases apart
    expect(report.findings.map((f) => f.code)).toEqual(['BASE_MISMATCH']);

    const out = join(dir, 'bound-other.gguf');
    const c = await cli(['convert', adapter, '--base', BASE, '--out', out, '--json'], state);
    expect(c.code).toBe(1);
    expect((c.json as ErrorJson).error.code).toBe('BASE_MISMATCH');
    expect((c.json as ErrorJson).error.message).toContain(otherSha);
    expect(await readdir(dir)).not.toContain('bound-other.gguf');
    // its own base: fine, no warning
    const ok = await cli(['convert', adapter, '--base', other, '--out', out, '--json'], state);
    expect(ok.code, ok.stderr).toBe(0);
    expect((ok.json as { warnings: unknown[] }).warnings).toEqual([]);
  });

  it('an adapter that records no base: converted, with BASE_UNRECORDED; nothing hashed for it', async () => {
    const state = await openTempDir('codi-state-');
    const adapter = await makeAdapter(dir, 'unbound');
    const v = await cli(['verify', adapter, '--base', BASE, '--json'], state);
    expect(v.code).toBe(0);
    expect((v.json as ReportJson).findings).toEqual([
      expect.objectContaining({ code: 'BASE_UNRECORDED', level: 'warning' }),
    ]);
    expect(hashed(v)).toBe(false);
    const strict = await cli(['verify', adapter, '--base', BASE, '--strict'], state);
    expect(strict.code).toBe(1);
    const c = await cli(['convert', adapter, '--base', BASE, '--out', join(dir, 'unbound.gguf')], state);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout + c.stderr).toContain('BASE_UNRECORDED');
    // verify without --base has no base to speak of
    expect((await cli(['verify', adapter, '--json'], state)).json).toMatchObject({ ok: true, findings: [] });
  });

  it('the base hash is cached in the state directory, and computed again whenever the file changes', async () => {
    const state = await openTempDir('codi-state-');
    const base = join(dir, 'cached-base.gguf');
    await copyFile(BASE, base);
    const adapter = await makeAdapter(dir, 'bound-cache', { base: { sha256: baseSha } });
    const verify = (): Promise<CliResult> => cli(['verify', adapter, '--base', base, '--json'], state);

    const first = await verify();
    expect(first.code, first.stderr).toBe(0);
    expect(hashed(first)).toBe(true);
    const entries = await readdir(join(state, 'base-sha256'));
    expect(entries).toHaveLength(1);
    const cacheFile = join(state, 'base-sha256', entries[0] ?? '');
    expect((await stat(cacheFile)).mode & 0o777).toBe(0o600);
    const second = await verify();
    expect(second.code).toBe(0);
    expect(hashed(second)).toBe(false);

    // mtime (and ctime): touched
    const later = new Date(Date.now() + 5000);
    await utimes(base, later, later);
    expect(hashed(await verify())).toBe(true);
    expect(hashed(await verify())).toBe(false);
    // ctime alone: a chmod
    await chmod(base, 0o640);
    expect(hashed(await verify())).toBe(true);
    // another inode under the same name
    await copyFile(BASE, `${base}.new`);
    await rename(`${base}.new`, base);
    expect(hashed(await verify())).toBe(true);
    // the same size, one byte changed: a different base, refused
    const bytes = await readFile(base);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1;
    await writeFile(base, bytes);
    const changed = await verify();
    expect(hashed(changed)).toBe(true);
    expect(changed.code).toBe(1);
    expect((changed.json as ReportJson).findings.map((f) => f.code)).toEqual(['BASE_MISMATCH']);
  });

  it('a cache file it cannot trust (writable by others, not JSON, another stamp) is ignored', async () => {
    const state = await openTempDir('codi-state-');
    const adapter = await makeAdapter(dir, 'bound-trust', { base: { sha256: baseSha } });
    const verify = (): Promise<CliResult> => cli(['verify', adapter, '--base', BASE, '--json'], state);
    expect(hashed(await verify())).toBe(true);
    const [entry] = await readdir(join(state, 'base-sha256'));
    const cacheFile = join(state, 'base-sha256', entry ?? '');
    const record = JSON.parse(await readFile(cacheFile, 'utf8')) as Record<string, unknown>;

    // another user could have written it: a cached "match" would let any base through
    await writeFile(cacheFile, JSON.stringify({ ...record, sha256: otherSha }));
    await chmod(cacheFile, 0o666);
    const open = await verify();
    expect(hashed(open)).toBe(true);
    expect(open.code).toBe(0);
    await writeFile(cacheFile, '{ not json', { mode: 0o600 });
    await chmod(cacheFile, 0o600);
    expect(hashed(await verify())).toBe(true);
    await writeFile(cacheFile, JSON.stringify({ ...record, size: '1' }));
    expect(hashed(await verify())).toBe(true);
  });

  it('a state directory it cannot write: hashed every time, and the check holds all the same', async () => {
    const blocked = join(dir, 'state-is-a-file');
    await writeFile(blocked, 'x');
    const adapter = await makeAdapter(dir, 'bound-nostate', { base: { sha256: baseSha } });
    for (let i = 0; i < 2; i++) {
      const r = await cli(['verify', adapter, '--base', BASE, '--json'], blocked);
      expect(r.code, r.stderr).toBe(0);
      expect(hashed(r)).toBe(true);
    }
  });
});

describe('mount --base records the base; what records one refuses another', () => {
  it('records sha256 and name in the installed copy (the source untouched); verify --base of another base fails', async () => {
    const { root, src } = await makeVolume();
    const state = await openTempDir('codi-state-');
    const source = await makeAdapter(src, 'to-bind');
    const sourceMetadata = await readFile(join(source, 'metadata.json'), 'utf8');
    const r = await cli(['mount', source, '--root', root, '--base', BASE, '--json'], state);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json as MountResult;
    expect(j.base).toEqual({
      sha256: baseSha,
      name: 'codi-tiny-qwen2',
      file: 'tiny-qwen2.gguf',
      recorded: true,
      replaced: null,
    });
    // recorded now: the warning about the source no longer applies
    expect(j.findings.map((f) => f.code)).not.toContain('BASE_UNRECORDED');
    const installed = join(root, 'adapters', 'to-bind');
    expect((await metadataOf(installed)).base).toEqual({
      sha256: baseSha,
      name: 'codi-tiny-qwen2',
      file: 'tiny-qwen2.gguf',
    });
    expect(await readFile(join(source, 'metadata.json'), 'utf8')).toBe(sourceMetadata);
    // and right after base_model, in the file's own layout
    const text = await readFile(join(installed, 'metadata.json'), 'utf8');
    expect(text).toMatch(/"base_model": "tiny-qwen2",\n {2}"base": \{\n {4}"sha256": "[0-9a-f]{64}",/u);

    // list shows what each adapter is bound to
    await cli(['mount', await makeAdapter(src, 'not-bound'), '--root', root], state);
    const listed = (await cli(['list', '--root', root, '--json'], state)).json as CatalogListing;
    expect(listed.adapters.map((a) => [a.id, a.base?.sha256 ?? null])).toEqual([
      ['not-bound', null],
      ['to-bind', baseSha],
    ]);

    expect((await cli(['verify', installed, '--base', BASE], state)).code).toBe(0);
    const refused = await cli(['verify', installed, '--base', other, '--json'], state);
    expect(refused.code).toBe(1);
    expect((refused.json as ReportJson).findings.map((f) => f.code)).toEqual(['BASE_MISMATCH']);
    const convert = await cli(['convert', installed, '--base', other, '--json'], state);
    expect((convert.json as ErrorJson).error).toMatchObject({ code: 'BASE_MISMATCH', exitCode: 1 });
  });

  it('mount --base again: the same base changes nothing; another is BASE_MISMATCH, --force rebinds', async () => {
    const { root, src } = await makeVolume();
    const state = await openTempDir('codi-state-');
    const source = await makeAdapter(src, 'rebind');
    expect((await cli(['mount', source, '--root', root, '--base', BASE], state)).code).toBe(0);
    const same = await cli(['mount', source, '--root', root, '--base', BASE, '--json'], state);
    expect(same.code).toBe(0);
    expect((same.json as MountResult).base).toMatchObject({ sha256: baseSha, recorded: false });

    const refused = await cli(['mount', source, '--root', root, '--base', other, '--json'], state);
    expect(refused.code).toBe(1);
    const e = (refused.json as ErrorJson).error;
    expect(e.code).toBe('BASE_MISMATCH');
    expect(e.message).toContain(baseSha);
    expect(e.message).toContain(otherSha);
    expect(e.hint).toContain('--force');
    const installed = join(root, 'adapters', 'rebind');
    expect((await metadataOf(installed)).base).toMatchObject({ sha256: baseSha });

    const forced = await cli(['mount', source, '--root', root, '--base', other, '--force', '--json'], state);
    expect(forced.code, forced.stderr).toBe(0);
    expect((forced.json as MountResult).base).toMatchObject({
      sha256: otherSha,
      recorded: true,
      replaced: baseSha,
    });
    expect((await metadataOf(installed)).base).toMatchObject({ sha256: otherSha, name: 'other-tiny' });
    // a source that itself records another base is refused before anything is copied
    const boundSource = await makeAdapter(src, 'bound-source', { base: { sha256: otherSha } });
    const r = await cli(['mount', boundSource, '--root', root, '--base', BASE, '--json'], state);
    expect((r.json as ErrorJson).error.code).toBe('BASE_MISMATCH');
    expect(await readdir(join(root, 'adapters'))).not.toContain('bound-source');
  });
});

describe('promote records the base in llm_assist', () => {
  async function workspace(): Promise<{ rules: string; adapter: string }> {
    const ws = await openTempDir('codi-promote-base-');
    const rules = join(ws, 'rules.yml');
    await copyFile(EXAMPLE_RULES, rules);
    return { rules, adapter: await makeAdapter(ws, 'tiny-qwen2-lora') };
  }

  it('promote --base: sha256 and name in the rules entry and in metadata.json', async () => {
    const state = await openTempDir('codi-state-');
    const { rules, adapter } = await workspace();
    const r = await cli(
      ['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--base', BASE, '--json'],
      state,
    );
    expect(r.code, r.stderr).toBe(0);
    const j = r.json as PromoteResult;
    expect(j.base).toEqual({ sha256: baseSha, name: 'codi-tiny-qwen2', file: 'tiny-qwen2.gguf' });
    expect(j.warnings).toEqual([]);
    const entry = parseRules(await readFile(rules, 'utf8')).llmAssist?.adapters?.['tiny-qwen2-lora'];
    expect(entry?.base).toEqual({ sha256: baseSha, name: 'codi-tiny-qwen2' });
    expect((await metadataOf(adapter)).base).toEqual({
      sha256: baseSha,
      name: 'codi-tiny-qwen2',
      file: 'tiny-qwen2.gguf',
    });
    // again: nothing changes
    const again = await cli(['promote', adapter, '--rules', rules, '--base', BASE, '--json'], state);
    expect(again.json).toMatchObject({ already: true });
    // another base for the same release: refused unless --force
    const refused = await cli(['promote', adapter, '--rules', rules, '--base', other, '--json'], state);
    expect(refused.code).toBe(1);
    expect((refused.json as ErrorJson).error.code).toBe('BASE_MISMATCH');
  });

  it('promote without --base takes the base metadata.json records; with none, it warns', async () => {
    const state = await openTempDir('codi-state-');
    const { rules, adapter } = await workspace();
    const r = await cli(['promote', adapter, '--rules', rules, '--eval', EXAMPLE_EVAL, '--json'], state);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json as PromoteResult;
    expect(j.base).toBeNull();
    expect(j.warnings.map((w) => w.code)).toEqual(['BASE_UNRECORDED']);
    const human = await cli(['promote', adapter, '--rules', rules], state);
    expect(human.stdout).toContain('BASE_UNRECORDED');

    const ws = await workspace();
    const bound = await makeAdapter(dir, 'promote-bound', {
      base: { sha256: baseSha, name: 'codi-tiny-qwen2' },
    });
    const p = await cli(['promote', bound, '--rules', ws.rules, '--eval', EXAMPLE_EVAL, '--json'], state);
    expect(p.code, p.stderr).toBe(0);
    const entry = parseRules(await readFile(ws.rules, 'utf8')).llmAssist?.adapters?.['promote-bound'];
    expect(entry?.base).toEqual({ sha256: baseSha, name: 'codi-tiny-qwen2' });
    // --base of another base than it records: refused
    const refused = await cli(['promote', bound, '--rules', ws.rules, '--base', other, '--json'], state);
    expect((refused.json as ErrorJson).error.code).toBe('BASE_MISMATCH');
  });
});
