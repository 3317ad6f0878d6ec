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
  rename,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { accessProblems, userCan } from '../../src/catalog/access.js';
import { readActive, switchActive } from '../../src/catalog/active.js';
import { awaitReplacement, cleanLeftovers } from '../../src/catalog/leftovers.js';
import { listAdapters } from '../../src/catalog/list.js';
import { mountAdapter } from '../../src/catalog/mount.js';
import { adapterIdProblem, statusOf } from '../../src/catalog/volume.js';
import { sha256Bytes } from '../../src/checksum.js';
import { scanLayout } from '../../src/layout.js';
import { acquireLock } from '../../src/lock.js';
import { quickCheck } from '../../src/adapter-checks.js';
import { verifyAdapter } from '../../src/verify.js';
import { IS_ROOT, makeAdapter, makeVolume } from '../helpers/catalog.js';
import { rejected } from '../helpers/errors.js';

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

  it('leaves a subfolder (not part of an adapter) behind, and says so', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'with-sub');
    await mkdir(join(source, 'checkpoint-1', 'inner'), { recursive: true });
    await writeFile(join(source, 'checkpoint-1', 'optimizer.pt'), 'not an adapter file');
    const r = await mountAdapter(source, { root });
    expect(r.action).toBe('installed');
    expect((await readdir(r.path)).sort()).toEqual([
      'README.md',
      'adapter_config.json',
      'adapter_model.safetensors',
      'metadata.json',
    ]);
    const skipped = r.findings.filter((f) => f.code === 'MOUNT_SUBDIRECTORY_SKIPPED');
    expect(skipped.map((f) => [f.level, f.file, f.message])).toEqual([
      ['warning', 'checkpoint-1/', 'checkpoint-1/ is not part of a PEFT adapter and was not copied'],
    ]);
    expect(r.findings.map((f) => f.code)).not.toContain('LAYOUT_SUBDIRECTORY');
    // the same adapter again: unchanged (the subfolder was never part of it)
    expect((await mountAdapter(source, { root })).action).toBe('unchanged');
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

    const e = await rejected(mountAdapter(two, { root }));
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
    const e = await rejected(mountAdapter(dir, { root, id: 'other' }));
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
      const e = await rejected(mountAdapter(dir, { root }));
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
    const e = await rejected(mountAdapter('examples/adapters/broken-checksum', { root }));
    expect(e.code).toBe('CHECKSUM_MISMATCH');
    expect(statusOf(e)).toBe('invalid');
    await expect(lstat(join(root, 'adapters'))).rejects.toThrow();
  });

  it('refuses bad ids before touching anything', async () => {
    const { root, src } = await makeVolume();
    const dir = await makeAdapter(src, 'ok');
    for (const id of ['../escape', 'a/b', '..', 'active']) {
      const e = await rejected(mountAdapter(dir, { root, id }));
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
    // heartbeat silent for longer than the bound (30 s): another container's mount that is gone, or
    // one of a container restarted under the same hostname (its pid 1 is someone else now)
    const foreignQuiet = `.staging-quiet-dddddddd-1-0123456789ab`;
    const sameNameQuiet = `.staging-reborn-${host}-1-0123456789ab`;
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
      foreignQuiet,
      sameNameQuiet,
      'there',
    ]) {
      await mkdir(join(adapters, n));
      await writeFile(join(adapters, n, 'f'), n);
    }
    const old = new Date(Date.now() - 2 * 60 * 60_000);
    await utimes(join(adapters, foreignOld, 'f'), old, old);
    await utimes(join(adapters, foreignOld), old, old);
    const quiet = new Date(Date.now() - 40_000);
    for (const n of [foreignQuiet, sameNameQuiet]) {
      await utimes(join(adapters, n, 'f'), quiet, quiet);
      await utimes(join(adapters, n), quiet, quiet);
    }
    await symlink('there', join(adapters, `.active.${dead}.0123456789ab.tmp`));
    await symlink('there', join(adapters, '.active.1.0123456789ab.tmp'));
    const cleaned = await cleanLeftovers(adapters);
    expect(cleaned.restored.sort()).toEqual(['far-away', 'lost-id']);
    expect(cleaned.removed.sort()).toEqual(
      [
        deadStaging,
        coveredTrash,
        foreignOld,
        foreignQuiet,
        sameNameQuiet,
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
    const e = await rejected(switchActive(other, 'one'));
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
    // another host's mounts: one at work (fresh heartbeat), one whose heartbeat stopped long ago
    await mkdir(join(adapters, '.staging-zz-00000000-1-0123456789ab'));
    await mkdir(join(adapters, '.staging-yy-00000000-1-0123456789ab'));
    const old = new Date(Date.now() - 60 * 60_000);
    await utimes(join(adapters, '.staging-yy-00000000-1-0123456789ab'), old, old);
    await mkdir(join(adapters, 'Not_An_Id'));
    const listing = await listAdapters({ root });
    expect(listing.active).toBe('b-adapter');
    expect(listing.leftovers).toEqual(['.staging-yy-00000000-1-0123456789ab']);
    expect(listing.in_progress).toEqual(['.staging-zz-00000000-1-0123456789ab']);
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
    const e = await rejected(listAdapters({ root: '/nonexistent-volume' }));
    expect(e.code).toBe('ROOT_MISSING');
    expect(e.exitCode).toBe(3);
    expect(e.hint).toContain('/nonexistent-volume/adapters/<id>, readable by UID 1000');
  });
});

describe('a replacement between its two renames (awaitReplacement)', () => {
  const tag = (): Promise<string> =>
    import('node:os').then(async ({ hostname }) =>
      (await import('node:crypto')).createHash('sha256').update(hostname()).digest('hex').slice(0, 8),
    );

  it('waits while the mount lock is held and the id is in .trash-…; sees the new one as soon as it is there', async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    const trash = `.trash-x-${await tag()}-${process.pid}-0123456789ab`;
    await mkdir(join(adapters, trash));
    await symlink('x', join(adapters, 'active'));
    const lock = await acquireLock(join(adapters, '.mount.lock'));
    try {
      const started = Date.now();
      expect(await awaitReplacement(join(adapters, 'x'), 200)).toEqual({
        state: 'replacing',
        id: 'x',
        trash,
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
      // through the active link, the id it points to is what is replaced
      expect((await awaitReplacement(join(adapters, 'active'), 0)).state).toBe('replacing');
      setTimeout(() => void mkdir(join(adapters, 'x')), 100);
      expect(await awaitReplacement(join(adapters, 'x'), 5000)).toEqual({ state: 'present' });
      expect(await awaitReplacement(join(adapters, 'active'), 0)).toEqual({ state: 'present' });
    } finally {
      await lock.release();
    }
  });

  it('a trash folder without a live mount lock is an interrupted replacement; no trash: simply absent', async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    const trash = `.trash-x-${await tag()}-${deadPid()}-0123456789ab`;
    await mkdir(join(adapters, trash));
    const started = Date.now();
    expect(await awaitReplacement(join(adapters, 'x'), 5000)).toEqual({
      state: 'interrupted',
      id: 'x',
      trash,
    });
    expect(await awaitReplacement(join(adapters, 'y'), 5000)).toEqual({ state: 'absent' });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('list reports such an id as being replaced (not absent), or as interrupted, instead of leaving it out', async () => {
    const { root, src } = await makeVolume();
    await mountAdapter(await makeAdapter(src, 'x'), { root });
    const adapters = join(root, 'adapters');
    const trash = `.trash-x-${await tag()}-${process.pid}-0123456789ab`;
    await rename(join(adapters, 'x'), join(adapters, trash));
    const lock = await acquireLock(join(adapters, '.mount.lock'));
    let listing;
    try {
      listing = await listAdapters({ root });
    } finally {
      await lock.release();
    }
    expect(listing.adapters.map((a) => [a.id, a.status, a.finding?.code])).toEqual([
      ['x', 'not_mounted', 'ADAPTER_BEING_REPLACED'],
    ]);
    expect(listing.in_progress).toEqual([trash]);
    expect(listing.leftovers).toEqual([]);
    // its mount died: the next mount puts it back
    const after = await listAdapters({ root });
    expect(after.adapters.map((a) => [a.id, a.status, a.finding?.code])).toEqual([
      ['x', 'not_mounted', 'ADAPTER_REPLACE_INTERRUPTED'],
    ]);
    expect(after.leftovers).toEqual([trash]);
    // and a swap that completes while list waits is listed as mounted
    const again = await acquireLock(join(adapters, '.mount.lock'));
    setTimeout(() => void rename(join(adapters, trash), join(adapters, 'x')), 200);
    try {
      const done = await listAdapters({ root });
      expect(done.adapters.map((a) => [a.id, a.status])).toEqual([['x', 'mounted']]);
    } finally {
      await again.release();
    }
  });
});

describe('reaching the catalog: search permission on the way to the adapters', () => {
  const OTHER = { uid: 4242, gid: 4242 };

  it('a folder of the volume that the runtime user cannot pass: mount refuses (exit 3), list says not_mounted', async () => {
    const { root, src } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters, { recursive: true });
    const inPlace = await makeAdapter(adapters, 'b');
    await chmod(adapters, 0o700);
    const source = await makeAdapter(src, 'a');
    const e = await rejected(mountAdapter(source, { root, runtimeUser: OTHER }));
    expect(e.code).toBe('ADAPTER_UNREADABLE');
    expect(e.exitCode).toBe(3);
    expect(statusOf(e)).toBe('not_mounted');
    expect(e.message).toContain(`UID 4242 (the runtime user) cannot pass through ${adapters} (`);
    expect(e.message).toContain('0700, needs x)');
    expect(e.hint).toContain(`chmod a+x ${adapters}`);
    await expect(lstat(join(adapters, 'a'))).rejects.toThrow();
    // registered in place: the same
    expect((await rejected(mountAdapter(inPlace, { root, runtimeUser: OTHER }))).code).toBe(
      'ADAPTER_UNREADABLE',
    );
    const listing = await listAdapters({ root, runtimeUser: OTHER });
    expect(listing.adapters.map((a) => [a.id, a.status, a.finding?.code, a.finding?.hint])).toEqual([
      ['b', 'not_mounted', 'ADAPTER_UNREADABLE', `chmod a+x ${adapters}`],
    ]);
    await chmod(adapters, 0o755);
    expect((await mountAdapter(source, { root, runtimeUser: OTHER })).status).toBe('mounted');
  });

  it('a folder above the volume that the runtime user cannot pass: mounted, with ROOT_PATH_UNREACHABLE (a bind mount does not need it)', async () => {
    const { tmp, src } = await makeVolume();
    const closed = join(tmp, 'closed');
    await mkdir(closed, { mode: 0o700 });
    await chmod(closed, 0o700);
    const root = join(closed, 'models');
    await mkdir(root, { mode: 0o755 });
    const source = await makeAdapter(src, 'a');
    const r = await mountAdapter(source, { root, runtimeUser: OTHER });
    expect(r.status).toBe('mounted');
    const warning = r.findings.find((f) => f.code === 'ROOT_PATH_UNREACHABLE');
    expect(warning?.level).toBe('warning');
    expect(warning?.message).toContain(`UID 4242 cannot pass through ${closed} (`);
    expect(warning?.message).toContain(`above the models volume ${root}`);
    expect(warning?.hint).toContain(`chmod a+x ${closed}`);

    const listing = await listAdapters({ root, runtimeUser: OTHER });
    expect(listing.adapters.map((a) => [a.id, a.status])).toEqual([['a', 'mounted']]);
    expect(listing.root_warning?.code).toBe('ROOT_PATH_UNREACHABLE');
    // opened: no warning
    await chmod(closed, 0o711);
    expect((await listAdapters({ root, runtimeUser: OTHER })).root_warning).toBeNull();
    expect(
      (await mountAdapter(source, { root, runtimeUser: OTHER })).findings.map((f) => f.code),
    ).not.toContain('ROOT_PATH_UNREACHABLE');
  });
});

describe('list and mount agree on what verify says', () => {
  it.each([
    'broken-checksum',
    'broken-dora',
    'broken-pickle',
    'broken-trailing-bytes',
    'broken-unpaired',
    'tiny-qwen2-lora',
    'tiny-qwen2-lora-bin',
  ])(
    'list without --verify finds in %s what verify finds, short of the checksums and the tensors',
    async (name) => {
      const dir = join('examples/adapters', name);
      const byHashOrTensors = (code: string): boolean =>
        code === 'CHECKSUM_MISMATCH' || code.startsWith('TENSOR_') || code === 'TARGET_UNMATCHED';
      const verified = (await verifyAdapter(dir)).findings.filter((f) => !byHashOrTensors(f.code));
      expect((await quickCheck(dir)).findings).toEqual(verified);
    },
  );

  it("a killed promote's temp file: PROMOTE_LEFTOVER in list as in verify", async () => {
    const { root, src } = await makeVolume();
    const r = await mountAdapter(await makeAdapter(src, 'left'), { root });
    await writeFile(join(r.path, `.metadata.json.${deadPid()}.0123456789ab.tmp`), '{');
    expect((await verifyAdapter(r.path)).findings.map((f) => f.code)).toEqual(['PROMOTE_LEFTOVER']);
    const [entry] = (await listAdapters({ root })).adapters;
    expect(entry).toMatchObject({ id: 'left', status: 'mounted', warnings: 1 });
    expect(entry?.warning?.code).toBe('PROMOTE_LEFTOVER');
  });

  it('an id that differs from metadata.json: the ADAPTER_ID_MISMATCH warning with or without --verify', async () => {
    const { root, src } = await makeVolume();
    await mountAdapter(await makeAdapter(src, 'named'), { root, id: 'renamed' });
    for (const verify of [false, true]) {
      const [entry] = (await listAdapters({ root, verify })).adapters;
      expect(entry).toMatchObject({ id: 'renamed', status: 'mounted', warnings: 1 });
      expect(entry?.warning?.code).toBe('ADAPTER_ID_MISMATCH');
      expect(entry?.warning?.message).toContain('"renamed" but metadata.json says id "named"');
    }
  });

  it('weights the checksums do not cover: CHECKSUM_WEIGHTS_UNCOVERED alone, as verify says it, not also FILE_UNCOVERED', async () => {
    const { src } = await makeVolume();
    const dir = await makeAdapter(src, 'uncovered');
    const meta = JSON.parse(await readFile(join(dir, 'metadata.json'), 'utf8')) as {
      checksum: { files: object };
    };
    meta.checksum.files = {
      'adapter_config.json': sha256Bytes(await readFile(join(dir, 'adapter_config.json'))),
    };
    await writeFile(join(dir, 'metadata.json'), JSON.stringify(meta));
    const codes = (findings: readonly { code: string }[]) => findings.map((f) => f.code);
    expect(codes((await quickCheck(dir)).findings)).toEqual(['CHECKSUM_WEIGHTS_UNCOVERED']);
    expect(codes((await verifyAdapter(dir)).findings)).toEqual(['CHECKSUM_WEIGHTS_UNCOVERED']);
  });

  it('a symbolic link in the catalog is invalid (LAYOUT_SYMLINK) in list, refused by mount, replaced only with --force', async () => {
    const { root, src } = await makeVolume();
    const outside = await makeAdapter(src, 'linked');
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    await symlink(outside, join(adapters, 'linked'));
    const [entry] = (await listAdapters({ root })).adapters;
    expect(entry).toMatchObject({ id: 'linked', status: 'invalid' });
    expect(entry?.finding?.code).toBe('LAYOUT_SYMLINK');
    expect(entry?.finding?.message).toContain(`to ${outside}`);

    const e = await rejected(mountAdapter(join(adapters, 'linked'), { root }));
    expect(e.code).toBe('LAYOUT_SYMLINK');
    expect(e.exitCode).toBe(1);
    expect(statusOf(e)).toBe('invalid');
    expect(e.hint).toContain(`codi-adapter mount ${outside} --id linked --force`);
    // installing the target under that id: the link is "other contents"
    expect((await rejected(mountAdapter(outside, { root }))).code).toBe('MOUNT_CONFLICT');
    const r = await mountAdapter(outside, { root, force: true });
    expect(r.action).toBe('replaced');
    expect((await lstat(join(adapters, 'linked'))).isDirectory()).toBe(true);
    // the link went, not what it pointed to
    expect((await readdir(outside)).sort()).toContain('adapter_model.safetensors');
    expect((await listAdapters({ root })).adapters.map((a) => [a.id, a.status])).toEqual([
      ['linked', 'mounted'],
    ]);
  });
});
