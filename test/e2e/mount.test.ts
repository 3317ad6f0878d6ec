/** `codi-adapter mount` as a user runs it, including SIGKILL at every step and a source that changes. */
import { chmod, lstat, mkdir, readdir, readFile, readlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CatalogListing } from '../../src/catalog/list.js';
import { mountAdapter, type MountResult } from '../../src/catalog/mount.js';
import { sha256Bytes } from '../../src/checksum.js';
import { verifyAdapter } from '../../src/verify.js';
import { IS_ROOT, makeAdapter, makeVolume } from '../helpers/catalog.js';
import { killAfterRandomDelay, msFromStepToEnd, runCli, startCli } from '../helpers/cli.js';

interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; hint?: string; details?: { status?: string } };
}

const weightsOf = (dir: string): Promise<Buffer> => readFile(join(dir, 'adapter_model.safetensors'));

describe('mount (built CLI)', () => {
  it('installs the example, prints the status line, and --json gives the result', async () => {
    const { root } = await makeVolume();
    const human = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', root, '--activate']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(
      `Adapter Status: mounted (installed tiny-qwen2-lora 0.1.0 at ${root}/adapters/tiny-qwen2-lora)`,
    );
    expect(human.stdout).toContain('active → tiny-qwen2-lora');
    expect(await readlink(join(root, 'adapters', 'active'))).toBe('tiny-qwen2-lora');

    const again = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', root, '--json']);
    expect(again.code).toBe(0);
    const j = again.json as MountResult;
    expect(j).toMatchObject({
      status: 'mounted',
      action: 'unchanged',
      already: true,
      active: true,
      id: 'tiny-qwen2-lora',
    });
    expect(j.adapter.checksum).toBe(
      'sha256:601dd4a90ee933effd9995bd15bebf30e9ad00f9813684caad8d34faa300a8ce',
    );
    expect(again.stderr).toBe('');
  });

  it('MODEL_MOUNT_PATH is the default root', async () => {
    const { root } = await makeVolume();
    const r = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--json'], {
      env: { MODEL_MOUNT_PATH: root },
    });
    expect(r.code).toBe(0);
    expect((r.json as MountResult).path).toBe(join(root, 'adapters', 'tiny-qwen2-lora'));
  });

  it('other contents under the same id: exit 1 MOUNT_CONFLICT; --force swaps them', async () => {
    const { root, src } = await makeVolume();
    const other = await makeAdapter(src, 'tiny-qwen2-lora', { seed: 99 });
    expect((await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', root])).code).toBe(0);
    const refused = await runCli(['mount', other, '--root', root]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('Adapter Status: not_mounted (MOUNT_CONFLICT:');
    expect(refused.stderr).toContain('hint: pass --force');
    const forced = await runCli(['mount', other, '--root', root, '--force', '--json']);
    expect(forced.code).toBe(0);
    expect((forced.json as MountResult).action).toBe('replaced');
    expect(await weightsOf(join(root, 'adapters', 'tiny-qwen2-lora'))).toEqual(await weightsOf(other));
    expect(await readdir(join(root, 'adapters'))).toEqual(['tiny-qwen2-lora']);
  });

  it('--base builds the GGUF into <root>/adapters/.gguf-cache at mount time', async () => {
    const { root } = await makeVolume();
    const r = await runCli([
      'mount',
      'examples/adapters/tiny-qwen2-lora',
      '--root',
      root,
      '--base',
      'examples/base/tiny-qwen2.gguf',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const gguf = (r.json as MountResult).gguf;
    expect(gguf?.path.startsWith(join(root, 'adapters', '.gguf-cache', 'tiny-qwen2-lora.'))).toBe(true);
    expect((await lstat(gguf?.path ?? '')).size).toBeGreaterThan(0);
    const list = await runCli(['list', '--root', root, '--json']);
    expect((list.json as { adapters: unknown[] }).adapters).toHaveLength(1);
  });

  it.each([
    ['../escape', 'path separator'],
    ['a/b', 'path separator'],
    ['..', '".."'],
  ])('refuses --id %s (exit 2), touching nothing', async (id, why) => {
    const { root } = await makeVolume();
    const r = await runCli([
      'mount',
      'examples/adapters/tiny-qwen2-lora',
      '--root',
      root,
      '--id',
      id,
      '--json',
    ]);
    expect(r.code).toBe(2);
    expect((r.json as ErrorJson).error.code).toBe('MOUNT_ID_INVALID');
    expect((r.json as ErrorJson).error.message).toContain(why);
    expect(await readdir(root)).toEqual([]);
  });

  it('a source that is a file: a clear error, exit 3', async () => {
    const { root } = await makeVolume();
    const r = await runCli([
      'mount',
      'examples/adapters/tiny-qwen2-lora/adapter_model.safetensors',
      '--root',
      root,
    ]);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain('Adapter Status: not_mounted (PATH_NOT_DIRECTORY:');
    expect(r.stderr).toContain('is a file, not an adapter folder');
    expect(r.stderr).toContain('hint: give the folder that holds adapter_config.json');
  });

  it('a missing volume: exit 3 with the not_mounted hint', async () => {
    const r = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', '/nonexistent-models']);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain(
      'Adapter Status: not_mounted (ROOT_MISSING: the models volume /nonexistent-models does not exist)',
    );
    expect(r.stderr).toContain(
      'hint: mount the host folder at /nonexistent-models/adapters/<id>, readable by UID 1000',
    );
  });

  it('an invalid adapter: exit 1, Adapter Status: invalid with the finding', async () => {
    const { root } = await makeVolume();
    const r = await runCli(['mount', 'examples/adapters/broken-unpaired', '--root', root]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Adapter Status: invalid (TENSOR_UNPAIRED:');
  });

  /*
   * A root the mounting user may not write to. Run as root, chmod cannot stop us (root ignores mode
   * bits), so the CLI runs as UID 1000 — the runtime user — against a root-owned 0755 volume, which is
   * exactly the situation on a volume prepared by root. As a normal user, a 0555 volume does it.
   */
  it('a volume the user cannot write: exit 3 ROOT_NOT_WRITABLE', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'ro');
    if (!IS_ROOT) await chmod(root, 0o555);
    const r = await runCli(
      ['mount', source, '--root', root, '--json'],
      IS_ROOT ? { user: { uid: 1000, gid: 1000 } } : {},
    );
    if (!IS_ROOT) await chmod(root, 0o755);
    expect(r.code).toBe(3);
    expect(r.json).toMatchObject({
      ok: false,
      error: { code: 'ROOT_NOT_WRITABLE', exitCode: 3, details: { status: 'not_mounted' } },
    });
    expect(await readdir(root)).toEqual([]);
  });

  it.runIf(IS_ROOT)(
    'an adapter in place that UID 1000 cannot read: exit 3 with the chown/chmod fix',
    async () => {
      const { root } = await makeVolume();
      await mkdir(join(root, 'adapters'), { mode: 0o755 });
      const dir = await makeAdapter(join(root, 'adapters'), 'private');
      await chmod(join(dir, 'metadata.json'), 0o600);
      const r = await runCli(['mount', dir, '--root', root]);
      expect(r.code).toBe(3);
      expect(r.stdout).toContain(
        'Adapter Status: not_mounted (ADAPTER_UNREADABLE: UID 1000 (the runtime user) cannot read',
      );
      expect(r.stderr).toContain(`chown -R 1000:1000 ${dir}`);
      expect(r.stderr).toContain(`chmod -R a+rX ${dir}`);
      // and the runtime user really cannot: the kernel agrees (not readable: exit 3)
      const as1000 = await runCli(['verify', dir, '--json'], { user: { uid: 1000, gid: 1000 } });
      expect(as1000.code).toBe(3);
    },
  );
});

describe('mount: a source that changes while it is copied', () => {
  async function pausedMount(
    root: string,
    source: string,
    step: string,
  ): Promise<ReturnType<typeof startCli>> {
    const run = startCli(['mount', source, '--root', root, '--json'], { pauseAt: [step] });
    expect(await run.reached(step)).toBe(true);
    return run;
  }

  async function expectNothingMounted(root: string, id: string): Promise<void> {
    const left = await readdir(join(root, 'adapters'));
    expect(left.filter((n) => !n.startsWith('.mount.lock'))).toEqual([]);
    await expect(lstat(join(root, 'adapters', id))).rejects.toThrow();
  }

  it('weights rewritten after verification, before they are copied: the copy fails its checksum', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'moving');
    const run = await pausedMount(root, source, 'mount:copied:adapter_config.json');
    const w = await weightsOf(source);
    w[w.length - 1] = (w[w.length - 1] ?? 0) ^ 0x55;
    await writeFile(join(source, 'adapter_model.safetensors'), w);
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(1);
    expect((r.json as ErrorJson).error.code).toBe('MOUNT_SOURCE_CHANGED');
    expect((r.json as ErrorJson).error.message).toContain('CHECKSUM_MISMATCH');
    await expectNothingMounted(root, 'moving');
  });

  it('the source replaced by another valid adapter mid-copy: the copy is not what was verified', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'moving');
    const run = await pausedMount(root, source, 'mount:copied:adapter_config.json');
    // a self-consistent rewrite (new weights and matching metadata): verifying the copy alone passes
    await makeAdapter(src, 'moving', { seed: 4242 });
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(1);
    expect((r.json as ErrorJson).error.code).toBe('MOUNT_SOURCE_CHANGED');
    await expectNothingMounted(root, 'moving');
  });

  it('a damaged copy (a byte changed in staging) is caught by the re-verification', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'moving');
    const run = await pausedMount(root, source, 'mount:copied');
    const staging = (await readdir(join(root, 'adapters'))).find((n) => n.startsWith('.staging-moving-'));
    expect(staging).toBeDefined();
    const file = join(root, 'adapters', staging ?? '', 'adapter_model.safetensors');
    const w = await readFile(file);
    w[w.length - 1] = (w[w.length - 1] ?? 0) ^ 0x01;
    await writeFile(file, w);
    run.resume();
    const r = await run.done;
    expect(r.code).toBe(1);
    expect((r.json as ErrorJson).error.code).toBe('MOUNT_SOURCE_CHANGED');
    await expectNothingMounted(root, 'moving');
  });
});

describe('mount: crash safety', () => {
  interface Scene {
    root: string;
    adapters: string;
    oldWeights: Buffer;
    newWeights: Buffer;
    newSource: string;
  }

  /** `x` mounted with old weights, `keep` mounted and active; a new `x` waiting to replace the old. */
  async function scene(): Promise<Scene> {
    const { root, src } = await makeVolume();
    const oldSource = await makeAdapter(join(src, 'old'), 'x', { seed: 1 });
    const newSource = await makeAdapter(join(src, 'new'), 'x', { seed: 2, version: '0.2.0' });
    await mountAdapter(oldSource, { root });
    await mountAdapter(await makeAdapter(src, 'keep', { seed: 3 }), { root, activate: true });
    return {
      root,
      adapters: join(root, 'adapters'),
      oldWeights: await weightsOf(oldSource),
      newWeights: await weightsOf(newSource),
      newSource,
    };
  }

  /**
   * After a kill: `x` is the old adapter or the new one, complete and valid, or — only between the
   * two renames of a replacement — absent with the old one intact in `.trash-x-…`. `active` points to
   * `keep` or `x`, never anywhere else. Returns what was found.
   */
  async function expectOldOrNew(s: Scene): Promise<'old' | 'new' | 'in-trash'> {
    const names = await readdir(s.adapters);
    const active = await readlink(join(s.adapters, 'active'));
    expect(['keep', 'x']).toContain(active);
    const x = join(s.adapters, 'x');
    if (names.includes('x')) {
      const report = await verifyAdapter(x);
      expect(report.ok).toBe(true);
      const w = await weightsOf(x);
      if (w.equals(s.oldWeights)) return 'old';
      expect(sha256Bytes(w)).toBe(sha256Bytes(s.newWeights));
      return 'new';
    }
    const trash = names.filter((n) => n.startsWith('.trash-x-'));
    expect(trash).toHaveLength(1);
    expect((await weightsOf(join(s.adapters, trash[0] ?? ''))).equals(s.oldWeights)).toBe(true);
    expect(
      (await verifyAdapter(join(s.adapters, trash[0] ?? ''))).findings.filter((f) => f.level === 'error'),
    ).toEqual([]);
    return 'in-trash';
  }

  /** The next mount (of something else) cleans every leftover and puts a half-swapped `x` back. */
  async function recover(s: Scene, found: 'old' | 'new' | 'in-trash'): Promise<void> {
    const r = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', s.root, '--json']);
    expect(r.code).toBe(0);
    const names = await readdir(s.adapters);
    expect(names.filter((n) => n.startsWith('.'))).toEqual([]);
    const w = await weightsOf(join(s.adapters, 'x'));
    expect(w.equals(found === 'new' ? s.newWeights : s.oldWeights)).toBe(true);
    if (found === 'in-trash') expect((r.json as MountResult).cleaned.restored).toEqual(['x']);
  }

  const STEPS = [
    'mount:staged',
    'mount:copied:adapter_config.json',
    'mount:copied:adapter_model.safetensors',
    'mount:copied:metadata.json',
    'mount:copied',
    'mount:verified-copy',
    'mount:old-moved',
    'mount:swapped',
    'mount:active-temp',
  ];

  it.each(STEPS)(
    'SIGKILL at %s: the old adapter or the new one, and the next mount cleans up',
    async (step) => {
      const s = await scene();
      const run = startCli(['mount', s.newSource, '--root', s.root, '--force', '--activate'], {
        pauseAt: [step],
      });
      expect(await run.reached(step)).toBe(true);
      run.kill('SIGKILL');
      expect((await run.done).signal).toBe('SIGKILL');
      const found = await expectOldOrNew(s);
      if (step === 'mount:old-moved') expect(found).toBe('in-trash');
      if (step === 'mount:swapped' || step === 'mount:active-temp') expect(found).toBe('new');
      if (step === 'mount:verified-copy' || step === 'mount:staged') expect(found).toBe('old');
      if (step === 'mount:active-temp') expect(await readlink(join(s.adapters, 'active'))).toBe('keep');
      await recover(s, found);
    },
  );

  it('SIGKILL right after a fresh install renamed into place leaves the complete adapter', async () => {
    const { root, src } = await makeVolume();
    const source = await makeAdapter(src, 'fresh');
    const run = startCli(['mount', source, '--root', root], { pauseAt: ['mount:renamed'] });
    expect(await run.reached('mount:renamed')).toBe(true);
    run.kill('SIGKILL');
    await run.done;
    expect((await verifyAdapter(join(root, 'adapters', 'fresh'))).ok).toBe(true);
  });

  it(
    'SIGKILL after random delays (8 trials): never a partial adapter, always recoverable',
    { timeout: 240_000 },
    async () => {
      // how long the rest of a mount takes here, once its staging folder exists
      const probe = await scene();
      const span = await msFromStepToEnd(
        () =>
          startCli(['mount', probe.newSource, '--root', probe.root, '--force', '--activate'], {
            pauseAt: ['mount:staged'],
          }),
        'mount:staged',
      );
      const outcomes: string[] = [];
      for (let trial = 0; trial < 8; trial++) {
        const s = await scene();
        // random points inside the copy → verify → swap → link window
        const { result: r, delay } = await killAfterRandomDelay(
          () =>
            startCli(['mount', s.newSource, '--root', s.root, '--force', '--activate'], {
              pauseAt: ['mount:staged'],
            }),
          'mount:staged',
          span,
        );
        const found = await expectOldOrNew(s);
        if (r.code === 0) expect(found).toBe('new');
        else expect(r.signal).toBe('SIGKILL');
        outcomes.push(`${delay}ms:${r.code === 0 ? 'finished' : found}`);
        await recover(s, found);
      }
      console.log(`mount kill trials (rest of a mount: ${span} ms): ${outcomes.join(' ')}`);
    },
  );
});

describe('mount: leftovers of other hosts and containers on the volume', () => {
  it('a staging folder whose mount is gone from another container (heartbeat stopped) is cleaned by the next mount', async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    // a hostname hash and pid from a container that no longer exists: only the heartbeat can tell
    const gone = '.staging-x-deadbeef-99999-0123456789ab';
    const atWork = '.staging-y-deadbeef-99999-ba9876543210';
    for (const n of [gone, atWork]) {
      await mkdir(join(adapters, n), { recursive: true });
      await writeFile(join(adapters, n, 'adapter_model.safetensors'), 'partial');
    }
    const quiet = new Date(Date.now() - 40_000);
    await utimes(join(adapters, gone, 'adapter_model.safetensors'), quiet, quiet);
    await utimes(join(adapters, gone), quiet, quiet);

    const listed = await runCli(['list', '--root', root, '--json']);
    expect((listed.json as CatalogListing).leftovers).toEqual([gone]);
    expect((listed.json as CatalogListing).in_progress).toEqual([atWork]);

    const r = await runCli(['mount', 'examples/adapters/tiny-qwen2-lora', '--root', root, '--json']);
    expect(r.code).toBe(0);
    expect((r.json as MountResult).cleaned.removed).toEqual([gone]);
    expect((await readdir(adapters)).filter((n) => n.startsWith('.')).sort()).toEqual([atWork]);
  });

  it("another host's .mount.lock: taken over once its heartbeat stops for the bound, respected while it beats", async () => {
    const { root } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mkdir(adapters);
    const lock = join(adapters, '.mount.lock');
    const record = JSON.stringify({
      pid: 1,
      hostname: 'container-gone',
      nonce: '0123456789abcdef',
      acquired_at: new Date().toISOString(),
      heartbeat_ms: 100,
    });
    const env = { CODI_TEST_HEARTBEAT_STALE_MS: '1000' };
    const args = [
      'mount',
      'examples/adapters/tiny-qwen2-lora',
      '--root',
      root,
      '--json',
      '--lock-timeout',
      '3',
    ];

    // a live holder on another host: its beat keeps the lock fresh, so the mount gives up (exit 3)
    await writeFile(lock, record);
    const beat = setInterval(() => {
      const now = new Date();
      void utimes(lock, now, now).catch(() => undefined);
    }, 100);
    let held;
    try {
      held = await runCli(args, { env });
    } finally {
      clearInterval(beat);
    }
    expect(held.code).toBe(3);
    expect((held.json as ErrorJson).error.code).toBe('LOCK_HELD');
    expect((held.json as ErrorJson).error.message).toContain('pid 1 on container-gone');
    await expect(lstat(join(adapters, 'tiny-qwen2-lora'))).rejects.toThrow();

    // the same holder killed with its container: no more beats, taken over after the bound
    await writeFile(lock, record);
    const started = Date.now();
    const r = await runCli(args, { env });
    expect(r.code).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect((r.json as MountResult).action).toBe('installed');
    await expect(lstat(lock)).rejects.toThrow();
  });
});

describe('mount --force: what readers see between its two renames', () => {
  it('list and run wait for the swap and see the new adapter; a swap that stays stuck is reported as being replaced', async () => {
    const { root, src } = await makeVolume();
    const adapters = join(root, 'adapters');
    await mountAdapter(await makeAdapter(join(src, 'old'), 'x', { seed: 1 }), { root });
    const newSource = await makeAdapter(join(src, 'new'), 'x', { seed: 2, version: '0.2.0' });
    const runEnv = {
      MODEL_MOUNT_PATH: root,
      ADAPTER_PATH: join(adapters, 'x'),
      BASE_MODEL_PATH: join(root, 'no-base.gguf'),
      APP_COMMAND: 'none',
    };

    // stuck between the renames (paused): after its bounded wait, list says so instead of omitting x
    const stuck = startCli(['mount', newSource, '--root', root, '--force'], { pauseAt: ['mount:old-moved'] });
    expect(await stuck.reached('mount:old-moved')).toBe(true);
    const waiting = await runCli(['list', '--root', root, '--json']);
    const listing = waiting.json as CatalogListing;
    expect(listing.adapters.map((a) => [a.id, a.status, a.finding?.code])).toEqual([
      ['x', 'not_mounted', 'ADAPTER_BEING_REPLACED'],
    ]);
    // the old copy in .trash-x-…, the new one still in .staging-x-…
    expect(listing.in_progress.map((n) => n.slice(0, 9)).sort()).toEqual(['.staging-', '.trash-x-']);
    expect(listing.leftovers).toEqual([]);
    const runStuck = await runCli(['run', '--json'], { env: runEnv });
    expect(runStuck.code).toBe(3);
    expect((runStuck.json as ErrorJson).error.code).toBe('ADAPTER_NOT_MOUNTED');
    expect((runStuck.json as ErrorJson).error.message).toContain('is being replaced by a mount --force');

    // the swap goes on while they wait: both see the new adapter
    const list = startCli(['list', '--root', root, '--json']);
    const run = startCli(['run', '--json'], { env: runEnv });
    await new Promise((r) => setTimeout(r, 1000));
    stuck.resume();
    expect((await stuck.done).code).toBe(0);
    const after = (await list.done).json as CatalogListing;
    expect(after.adapters.map((a) => [a.id, a.status, a.version])).toEqual([['x', 'mounted', '0.2.0']]);
    const ran = await run.done;
    // past the adapter: the next thing it needs is the base model
    expect((ran.json as ErrorJson).error.code).toBe('BASE_MODEL_MISSING');
  });
});
