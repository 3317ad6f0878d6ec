/** The catalog as a library: mount, list, readability, leftovers, the active link. */
import { spawnSync } from 'node:child_process';
import {
  chmod,
  chown,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  accessProblems,
  adapterIdProblem,
  cleanLeftovers,
  listAdapters,
  mountAdapter,
  quickCheck,
  readActive,
  statusOf,
  switchActive,
  userCan,
} from '../../src/catalog.js';
import { CodiError } from '../../src/errors.js';
import { scanLayout } from '../../src/layout.js';
import { IS_ROOT, makeAdapter, makeVolume } from '../helpers/catalog.js';

async function failure(promise: Promise<unknown>): Promise<CodiError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof CodiError) return e;
    throw e;
  }
  throw new Error('it succeeded');
}

function deadPid(): number {
  return Number(
    spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString(),
  );
}

const USER = { uid: 1000, gid: 1000 };

describe('readability by the runtime user', () => {
  it.each([
    // mode, uid, gid, need, expected
    [0o644, 0, 0, 4, true],
    [0o600, 0, 0, 4, false], // root-owned 0600: not readable by 1000
    [0o640, 0, 1000, 4, true], // group class
    [0o044, 1000, 0, 4, false], // the owner class applies to the owner, even when "other" grants more
    [0o400, 1000, 1000, 4, true],
    [0o755, 0, 0, 5, true],
    [0o750, 0, 0, 5, false],
    [0o711, 0, 0, 1, true],
    [0o744, 0, 0, 5, false], // a folder without x cannot be entered
  ])('mode %o owned by %i:%i, need %i → %s', (mode, uid, gid, need, ok) => {
    expect(userCan({ mode, uid, gid }, need, USER)).toBe(ok);
  });

  it.runIf(IS_ROOT)('agrees with the kernel: UID 1000 really can (not) read those files', async () => {
    const { tmp } = await makeVolume();
    const cases: [number, number, number][] = [
      [0o644, 0, 0],
      [0o600, 0, 0],
      [0o640, 0, 1000],
      [0o044, 1000, 0],
      [0o400, 1000, 1000],
      [0o000, 1000, 1000],
    ];
    for (const [i, [mode, uid, gid]] of cases.entries()) {
      const file = join(tmp, `f${i}`);
      await writeFile(file, 'x');
      await chown(file, uid, gid);
      await chmod(file, mode);
      const kernel = spawnSync(
        process.execPath,
        ['-e', `require('fs').accessSync(${JSON.stringify(file)}, 4)`],
        {
          uid: 1000,
          gid: 1000,
        },
      );
      expect(kernel.status === 0, `mode ${mode.toString(8)} ${uid}:${gid}`).toBe(
        userCan({ mode, uid, gid }, 4, USER),
      );
    }
  });

  it('lists every file and folder UID 1000 cannot read, with owner and mode', async () => {
    const { src } = await makeVolume();
    const dir = await makeAdapter(src, 'a');
    await chmod(join(dir, 'adapter_model.safetensors'), 0o600);
    await chown(join(dir, 'adapter_model.safetensors'), 0, 0).catch(() => undefined);
    const problems = await accessProblems(await scanLayout(dir), [], USER);
    if (IS_ROOT) {
      expect(problems).toEqual([
        {
          path: join(dir, 'adapter_model.safetensors'),
          kind: 'file',
          owner: '0:0',
          mode: '0600',
          needs: 'r',
        },
      ]);
    }
  });
});

describe('adapter ids', () => {
  it.each([
    ['qwen15b-lora-v0.1', null],
    ['../evil', 'path separator'],
    ['a/b', 'path separator'],
    ['..', '".."'],
    ['a..b', '".."'],
    ['Upper', 'must match'],
    ['.hidden', 'must match'],
    ['active', 'link'],
  ])('%s', (id, problem) => {
    const got = adapterIdProblem(id);
    if (problem === null) expect(got).toBeNull();
    else expect(got).toContain(problem);
  });
});

describe('mountAdapter', () => {
  it('installs a copy: verified, readable, renamed into place, nothing left behind', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'tiny-a');
    const r = await mountAdapter(source, { root });
    expect(r).toMatchObject({ status: 'mounted', action: 'installed', already: false, id: 'tiny-a' });
    expect(r.path).toBe(join(root, 'adapters', 'tiny-a'));
    expect((await readdir(join(root, 'adapters'))).sort()).toEqual(['tiny-a']);
    for (const name of await readdir(r.path)) {
      const st = await lstat(join(r.path, name));
      expect(st.mode & 0o777).toBe(0o644);
    }
    expect((await lstat(r.path)).mode & 0o777).toBe(0o755);
    expect(await readFile(join(r.path, 'adapter_model.safetensors'))).toEqual(
      await readFile(join(source, 'adapter_model.safetensors')),
    );
  });

  it('same id, same checksums: success, nothing changed; other contents: MOUNT_CONFLICT unless --force', async () => {
    const { root, src } = await makeVolume();
    const one = await makeAdapter(src, 'x', { seed: 1 });
    const two = await makeAdapter(src, 'x', { seed: 2 }, 'x-other');
    await mountAdapter(one, { root });
    const before = await lstat(join(root, 'adapters', 'x'));
    const again = await mountAdapter(one, { root });
    expect(again).toMatchObject({ action: 'unchanged', already: true });
    expect((await lstat(join(root, 'adapters', 'x'))).ino).toBe(before.ino);

    const e = await failure(mountAdapter(two, { root }));
    expect(e.code).toBe('MOUNT_CONFLICT');
    expect(e.exitCode).toBe(1);
    expect(statusOf(e)).toBe('not_mounted');
    expect((await lstat(join(root, 'adapters', 'x'))).ino).toBe(before.ino);

    const forced = await mountAdapter(two, { root, force: true });
    expect(forced.action).toBe('replaced');
    expect(await readFile(join(root, 'adapters', 'x', 'adapter_model.safetensors'))).toEqual(
      await readFile(join(two, 'adapter_model.safetensors')),
    );
    expect((await readdir(join(root, 'adapters'))).sort()).toEqual(['x']);
  });

  it('registers an adapter already in <root>/adapters in place, and --activate points the link at it', async () => {
    const { root } = await makeVolume();
    await mkdir(join(root, 'adapters'), { mode: 0o755 });
    const dir = await makeAdapter(join(root, 'adapters'), 'in-place');
    const r = await mountAdapter(dir, { root, activate: true });
    expect(r).toMatchObject({ action: 'registered', path: dir, active: true, activated: true });
    expect(await readlink(join(root, 'adapters', 'active'))).toBe('in-place');
    const e = await failure(mountAdapter(dir, { root, id: 'other' }));
    expect(e.code).toBe('MOUNT_ID_MISMATCH');
    expect(e.exitCode).toBe(2);
  });

  it.runIf(IS_ROOT)(
    'an adapter UID 1000 cannot read is not_mounted (exit 3), with the chown/chmod fix',
    async () => {
      const { root } = await makeVolume();
      await mkdir(join(root, 'adapters'), { mode: 0o755 });
      const dir = await makeAdapter(join(root, 'adapters'), 'secret');
      await chmod(join(dir, 'adapter_model.safetensors'), 0o600);
      const e = await failure(mountAdapter(dir, { root }));
      expect(e.code).toBe('ADAPTER_UNREADABLE');
      expect(e.exitCode).toBe(3);
      expect(statusOf(e)).toBe('not_mounted');
      expect(e.message).toContain('adapter_model.safetensors (0:0 0600, needs r)');
      expect(e.hint).toContain(`chown -R 1000:1000 ${dir}`);
      expect(e.hint).toContain(`chmod -R a+rX ${dir}`);
      expect(e.hint).toContain('readable by UID 1000');
    },
  );

  it('an invalid adapter is refused with its first finding, status invalid', async () => {
    const { root } = await makeVolume();
    const e = await failure(mountAdapter('examples/adapters/broken-checksum', { root }));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
    expect(statusOf(e)).toBe('invalid');
    await expect(lstat(join(root, 'adapters'))).rejects.toThrow();
  });

  it('refuses bad ids before touching anything', async () => {
    const { root, src } = await makeVolume();
    const dir = await makeAdapter(src, 'ok');
    for (const id of ['../escape', 'a/b', '..', 'active']) {
      const e = await failure(mountAdapter(dir, { root, id }));
      expect(e.code).toBe('MOUNT_ID_INVALID');
      expect(e.exitCode).toBe(2);
    }
    await expect(lstat(join(root, 'adapters'))).rejects.toThrow();
  });
});

describe('leftovers', () => {
  it('cleans dead staging, any trash and temp link, restores an orphaned trash, keeps live staging', async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    const { createHash } = await import('node:crypto');
    const { hostname } = await import('node:os');
    const host = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
    const dead = deadPid();
    const deadStaging = `.staging-a-b-${host}-${dead}-0123456789ab`;
    // pid 1 always exists: a mount in progress
    const liveStaging = `.staging-live-${host}-1-0123456789ab`;
    const orphanTrash = `.trash-lost-id-${host}-${dead}-0123456789ab`;
    const coveredTrash = `.trash-there-${host}-${dead}-0123456789ab`;
    const foreignOld = `.staging-far-ffffffff-${dead}-0123456789ab`;
    const foreignNew = `.staging-near-eeeeeeee-${dead}-0123456789ab`;
    // trash is only ever made and removed under the mount lock: holding it, any trash is a leftover
    const foreignTrash = `.trash-far-away-eeeeeeee-1-0123456789ab`;
    for (const n of [
      deadStaging,
      liveStaging,
      orphanTrash,
      coveredTrash,
      foreignOld,
      foreignNew,
      foreignTrash,
      'there',
    ]) {
      await mkdir(join(adapters, n));
      await writeFile(join(adapters, n, 'f'), n);
    }
    const old = new Date(Date.now() - 2 * 60 * 60_000);
    await utimes(join(adapters, foreignOld, 'f'), old, old);
    await utimes(join(adapters, foreignOld), old, old);
    await symlink('there', join(adapters, `.active.${dead}.0123456789ab.tmp`));
    await symlink('there', join(adapters, '.active.1.0123456789ab.tmp'));
    const cleaned = await cleanLeftovers(adapters);
    expect(cleaned.restored.sort()).toEqual(['far-away', 'lost-id']);
    expect(cleaned.removed.sort()).toEqual(
      [
        deadStaging,
        coveredTrash,
        foreignOld,
        `.active.${dead}.0123456789ab.tmp`,
        '.active.1.0123456789ab.tmp',
      ].sort(),
    );
    expect((await readdir(adapters)).sort()).toEqual(
      [foreignNew, liveStaging, 'far-away', 'lost-id', 'there'].sort(),
    );
    expect(await readFile(join(adapters, 'lost-id', 'f'), 'utf8')).toBe(orphanTrash);
  });

  it('switches the active link atomically and refuses to replace a real folder', async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    expect(await switchActive(adapters, 'one')).toBe(true);
    expect(await switchActive(adapters, 'one')).toBe(false);
    expect(await switchActive(adapters, 'two')).toBe(true);
    expect(await readActive(adapters)).toBe('two');
    expect((await readdir(adapters)).sort()).toEqual(['active']);
    const other = join(root, 'other');
    await mkdir(join(other, 'active'), { recursive: true });
    const e = await failure(switchActive(other, 'one'));
    expect(e.code).toBe('ACTIVE_NOT_LINK');
  });
});

describe('listAdapters', () => {
  it('lists ids, versions, recorded checksums, sizes, statuses and the active one; skips dot entries', async () => {
    const { root, src } = await makeVolume();
    await mountAdapter(await makeAdapter(src, 'b-adapter', { version: '1.2.3' }), { root, activate: true });
    await mountAdapter(await makeAdapter(src, 'a-adapter'), { root });
    const adapters = join(root, 'adapters');
    await mkdir(join(adapters, '.gguf-cache'));
    await mkdir(join(adapters, '.staging-zz-00000000-1-0123456789ab'));
    await mkdir(join(adapters, 'Not_An_Id'));
    const listing = await listAdapters({ root });
    expect(listing.active).toBe('b-adapter');
    expect(listing.leftovers).toEqual(['.staging-zz-00000000-1-0123456789ab']);
    expect(listing.adapters.map((a) => [a.id, a.version, a.status, a.active])).toEqual([
      ['Not_An_Id', null, 'invalid', false],
      ['a-adapter', '0.1.0', 'mounted', false],
      ['b-adapter', '1.2.3', 'mounted', true],
    ]);
    const b = listing.adapters[2];
    expect(b?.checksum).toMatch(/^sha256:[0-9a-f]{64}$/u);
    expect(b?.checksum_verified).toBe(false);
    expect(b?.size).toBeGreaterThan(60_000);
    expect(listing.adapters[0]?.finding?.code).toBe('MOUNT_ID_INVALID');
  });

  it('without --verify a flipped weight byte goes unnoticed; --verify finds it', async () => {
    const { root, src } = await makeVolume();
    const r = await mountAdapter(await makeAdapter(src, 'flip'), { root });
    const weights = join(r.path, 'adapter_model.safetensors');
    const bytes = await readFile(weights);
    const last = bytes.length - 1;
    bytes[last] = (bytes[last] ?? 0) ^ 0xff;
    await writeFile(weights, bytes);
    expect((await listAdapters({ root })).adapters[0]?.status).toBe('mounted');
    const verified = await listAdapters({ root, verify: true });
    expect(verified.adapters[0]).toMatchObject({ status: 'invalid', checksum_verified: true });
    expect(verified.adapters[0]?.finding?.code).toBe('CHECKSUM_MISMATCH');
  });

  it("a promote's lock and temp file in the source are not copied; list does not count them as uncovered", async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'locked');
    await writeFile(
      join(source, '.metadata.json.lock'),
      JSON.stringify({ pid: process.pid, hostname: 'h', nonce: 'n', acquired_at: new Date().toISOString() }),
    );
    await writeFile(join(source, `.metadata.json.${process.pid}.0123456789ab.tmp`), '{');
    const r = await mountAdapter(source, { root });
    expect(r.status).toBe('mounted');
    expect((await readdir(r.path)).filter((n) => n.startsWith('.'))).toEqual([]);
    // one in the volume (a promote running there) is not a problem of the adapter either
    await writeFile(join(r.path, '.metadata.json.lock'), '{}');
    const check = await quickCheck(r.path);
    expect(check.findings).toEqual([]);
    expect((await listAdapters({ root })).adapters[0]?.status).toBe('mounted');
  });

  it('quickCheck reports header problems without hashing', async () => {
    const r = await quickCheck('examples/adapters/broken-trailing-bytes');
    expect(r.findings.map((f) => f.code)).toContain('SAFETENSORS_TRAILING');
  });

  it('a missing volume is exit 3 with the not_mounted hint', async () => {
    const e = await failure(listAdapters({ root: '/nonexistent-volume' }));
    expect(e.code).toBe('ROOT_MISSING');
    expect(e.exitCode).toBe(3);
    expect(e.hint).toContain('/nonexistent-volume/adapters/<id>, readable by UID 1000');
  });
});
