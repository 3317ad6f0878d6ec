/** `codi-adapter list` as a user runs it. */
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CatalogListing } from '../../src/catalog/list.js';
import { mountAdapter } from '../../src/catalog/mount.js';
import { makeAdapter, makeVolume } from '../helpers/catalog.js';
import { runCli, runOnTerminal, SGR } from '../helpers/cli.js';

describe('list (built CLI)', () => {
  it('prints a table with a marker on the active adapter; --json holds the same data', async () => {
    const { root, src } = await makeVolume();
    await mountAdapter('examples/adapters/tiny-qwen2-lora', { root, activate: true });
    await mountAdapter(await makeAdapter(src, 'second', { version: '2.0.0-rc.1', seed: 5 }), { root });
    // an invalid one, copied in by hand
    const broken = join(root, 'adapters', 'broken');
    await mkdir(broken);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'metadata.json']) {
      await writeFile(join(broken, f), await readFile(join('examples/adapters/broken-trailing-bytes', f)));
    }
    await mkdir(join(root, 'adapters', '.gguf-cache'));

    const r = await runCli(['list', '--root', root]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ {3}ID +VERSION +BASE MODEL +SHA256 +SIZE +STATUS$/u);
    expect(lines[1]).toMatch(
      /^ {3}broken +0\.1\.0 +tiny-qwen2 +[0-9a-f]{12} +\d+ KiB +invalid: SAFETENSORS_TRAILING /u,
    );
    expect(lines[2]).toMatch(/^ {3}second +2\.0\.0-rc\.1 +tiny-qwen2 +[0-9a-f]{12} +\d+ KiB +mounted$/u);
    expect(lines[3]).toMatch(/^\* {2}tiny-qwen2-lora +0\.1\.0 +tiny-qwen2 +601dd4a90ee9 +69 KiB +mounted$/u);
    expect(lines).toHaveLength(4);

    const j = await runCli(['list', '--root', root, '--json']);
    expect(j.code).toBe(0);
    const listing = j.json as CatalogListing;
    expect(listing.active).toBe('tiny-qwen2-lora');
    expect(listing.adapters.map((a) => [a.id, a.status, a.active, a.finding?.code ?? null])).toEqual([
      ['broken', 'invalid', false, 'SAFETENSORS_TRAILING'],
      ['second', 'mounted', false, null],
      ['tiny-qwen2-lora', 'mounted', true, null],
    ]);
    expect(listing.adapters[2]).toMatchObject({
      version: '0.1.0',
      base_model: 'tiny-qwen2',
      checksum: 'sha256:601dd4a90ee933effd9995bd15bebf30e9ad00f9813684caad8d34faa300a8ce',
      checksum_verified: false,
    });
  });

  it('colours the table on a terminal; plain under NO_COLOR, --no-color, and into a pipe', async () => {
    const { root } = await makeVolume();
    await mountAdapter('examples/adapters/tiny-qwen2-lora', { root, activate: true });
    // a real terminal (runOnTerminal takes out the variables that say CI; CI=true is checked below)
    const onTerminal = (prefix: string, extra = ''): string => {
      const r = runOnTerminal(`list --root ${root} ${extra}`, prefix);
      expect(r.status, r.stderr).toBe(0);
      return r.output;
    };
    const coloured = onTerminal('');
    expect(coloured).toMatch(SGR);
    expect(coloured).toContain('tiny-qwen2-lora');
    expect(onTerminal('NO_COLOR=1')).not.toMatch(SGR);
    expect(onTerminal('', '--no-color')).not.toMatch(SGR);
    expect(onTerminal('CI=true')).not.toMatch(SGR);
    const piped = await runCli(['list', '--root', root]);
    expect(piped.stdout).not.toMatch(SGR);
    expect(piped.stdout).toContain('tiny-qwen2-lora');
  });

  it('--verify re-hashes: a changed weight byte becomes invalid, and the exit status is 1', async () => {
    const { root } = await makeVolume();
    const m = await mountAdapter('examples/adapters/tiny-qwen2-lora', { root });
    const file = join(m.path, 'adapter_model.safetensors');
    const bytes = await readFile(file);
    bytes[bytes.length - 10] = (bytes[bytes.length - 10] ?? 0) ^ 1;
    await writeFile(file, bytes);
    const quick = await runCli(['list', '--root', root, '--json']);
    expect(quick.code).toBe(0);
    expect((quick.json as CatalogListing).adapters[0]?.status).toBe('mounted');
    const full = await runCli(['list', '--root', root, '--verify', '--json']);
    expect(full.code).toBe(1);
    expect((full.json as CatalogListing).adapters[0]).toMatchObject({
      status: 'invalid',
      checksum_verified: true,
      finding: { code: 'CHECKSUM_MISMATCH' },
    });
  });

  it('shows the first warning without --verify (ADAPTER_ID_MISMATCH), and a linked folder as invalid', async () => {
    const { root, src } = await makeVolume();
    await mountAdapter('examples/adapters/tiny-qwen2-lora', { root, id: 'renamed' });
    await symlink(await makeAdapter(src, 'elsewhere'), join(root, 'adapters', 'linked'));
    const r = await runCli(['list', '--root', root]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[1]).toMatch(
      /^ {3}linked +- +- +- +0 B +invalid: LAYOUT_SYMLINK linked is a symbolic link \(to /u,
    );
    expect(lines[2]).toMatch(/^ {3}renamed +0\.1\.0 .* mounted \(1 warning: ADAPTER_ID_MISMATCH\)$/u);
    const j = (await runCli(['list', '--root', root, '--json'])).json as CatalogListing;
    expect(j.adapters.map((a) => [a.id, a.status, a.finding?.code ?? null, a.warning?.code ?? null])).toEqual(
      [
        ['linked', 'invalid', 'LAYOUT_SYMLINK', null],
        ['renamed', 'mounted', null, 'ADAPTER_ID_MISMATCH'],
      ],
    );
  });

  it('an empty volume, a dangling active link, and a missing volume', async () => {
    const { root } = await makeVolume();
    const empty = await runCli(['list', '--root', root]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain(`No adapters in ${root}/adapters.`);
    await mkdir(join(root, 'adapters'));
    await symlink('gone', join(root, 'adapters', 'active'));
    const dangling = await runCli(['list', '--root', root, '--json']);
    expect(dangling.json).toMatchObject({ active: 'gone', active_dangling: true, adapters: [] });
    const missing = await runCli(['list', '--root', '/nonexistent-models', '--json']);
    expect(missing.code).toBe(3);
    expect(missing.json).toMatchObject({ ok: false, error: { code: 'ROOT_MISSING', exitCode: 3 } });
  });
});
