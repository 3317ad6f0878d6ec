/**
 * `codi-adapter run` against an adapter or base model the user it runs as cannot read: the built CLI,
 * as a user who is not root. Root reads everything whatever the mode bits say, so as root the CLI is
 * started as UID 1000 (the image's user) with `setpriv`; as anyone else, the files are chmod'ed so
 * that this user cannot read them.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, chown, cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BIN, REPO } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const IS_ROOT = process.getuid?.() === 0;
const USER = IS_ROOT
  ? { uid: 1000, gid: 1000 }
  : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const EXAMPLES = join(REPO, 'examples');

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `run` through the built CLI; as root, dropped to UID 1000 (no supplementary groups) unless `asRoot`. */
function run(args: readonly string[], env: Record<string, string>, asRoot = false): Promise<Ran> {
  const cli = [process.execPath, BIN, 'run', ...args];
  const [command, ...argv] =
    IS_ROOT && !asRoot
      ? ['setpriv', `--reuid=${USER.uid}`, `--regid=${USER.gid}`, '--clear-groups', ...cli]
      : cli;
  return new Promise((resolve, reject) => {
    const child = spawn(command ?? '', argv, {
      cwd: REPO,
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

/** What a user who cannot read `path` sees: root-owned 0700/0600 as root, 0000 otherwise. */
async function closeUp(path: string, kind: 'dir' | 'file'): Promise<void> {
  await chmod(path, IS_ROOT ? (kind === 'dir' ? 0o700 : 0o600) : 0o000);
}

let root: string;
let models: string;
let env: Record<string, string>;

beforeAll(async () => {
  root = await tempDir('codi-run-unreadable-');
  models = join(root, 'models');
  await mkdir(join(models, 'base'), { recursive: true });
  await mkdir(join(models, 'adapters'));
  await cp(join(EXAMPLES, 'base', 'tiny-qwen2.gguf'), join(models, 'base', 'tiny-qwen2.gguf'));
  for (const id of ['readable-lora', 'closed-lora', 'closed-file-lora', 'behind-closed-lora']) {
    await cp(join(EXAMPLES, 'adapters', 'tiny-qwen2-lora'), join(models, 'adapters', id), {
      recursive: true,
    });
  }
  // the writable places run needs: the state folder and the GGUF cache, the user's own
  const own = join(root, 'own');
  await mkdir(join(own, 'cache'), { recursive: true });
  await mkdir(join(own, 'state'));
  for (const p of [own, join(own, 'cache'), join(own, 'state')])
    if (IS_ROOT) await chown(p, USER.uid, USER.gid);
  await chmod(root, 0o755);
  env = {
    MODEL_MOUNT_PATH: models,
    CODE_MODEL: 'tiny-qwen2',
    APP_COMMAND: 'none',
    // step 1 and the verification are what is tested: no llama-server is started
    LLAMA_SERVER_BIN: join(root, 'no-llama-server'),
    CODI_STATE_DIR: join(own, 'state'),
    CODI_GGUF_CACHE: join(own, 'cache'),
    HOME: own,
  };
  await closeUp(join(models, 'adapters', 'closed-lora'), 'dir');
  await closeUp(join(models, 'adapters', 'closed-file-lora', 'adapter_model.safetensors'), 'file');
  const inner = join(models, 'adapters', 'behind-closed-lora', 'closed');
  await mkdir(inner);
  await cp(join(EXAMPLES, 'adapters', 'tiny-qwen2-lora'), join(inner, 'tiny-qwen2-lora'), {
    recursive: true,
  });
  await closeUp(inner, 'dir');
});

describe(`run as a user who cannot read the adapter (UID ${USER.uid}${IS_ROOT ? ', through setpriv' : ''})`, () => {
  it('an unreadable adapter folder: Adapter Status: not_mounted, the ownership hint, exit 3', async () => {
    const dir = join(models, 'adapters', 'closed-lora');
    const r = await run(['--adapter-path', dir], env);
    expect(r.code).toBe(3);
    expect(r.stdout + r.stderr).toMatch(
      new RegExp(
        `Adapter Status: not_mounted \\(UID ${USER.uid} \\(the runtime user\\) cannot read ${dir} \\(`,
        'u',
      ),
    );
    expect(r.stderr).toContain(`✖ ADAPTER_UNREADABLE: UID ${USER.uid}`);
    expect(r.stderr).toContain(`hint: chown -R ${USER.uid}:${USER.gid} ${dir}   or   chmod -R a+rX ${dir}`);
    expect(r.stderr).toContain(`readable by UID ${USER.uid}`);
    expect(r.stderr).not.toMatch(/^\s+at /mu);
  });

  it('--json: the error object with its code, exit status and hint', async () => {
    const dir = join(models, 'adapters', 'closed-lora');
    const r = await run(['--adapter-path', dir, '--json'], env);
    expect(r.code).toBe(3);
    const out = JSON.parse(r.stdout) as { ok: boolean; error: Record<string, unknown> };
    expect(out.ok).toBe(false);
    expect(out.error).toMatchObject({ code: 'ADAPTER_UNREADABLE', exitCode: 3, file: dir });
    expect(out.error.hint).toContain(`chown -R ${USER.uid}:${USER.gid}`);
  });

  it('a folder it can list but a file in it it cannot read: the file is named, exit 3', async () => {
    const dir = join(models, 'adapters', 'closed-file-lora');
    const r = await run(['--adapter-path', dir], env);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain(
      `Adapter Status: not_mounted (UID ${USER.uid} (the runtime user) cannot read ${join(dir, 'adapter_model.safetensors')}`,
    );
    expect(r.stderr).toContain('ADAPTER_UNREADABLE');
  });

  it('an adapter behind a folder it cannot pass: that folder and chmod a+x, exit 3', async () => {
    const closed = join(models, 'adapters', 'behind-closed-lora', 'closed');
    const r = await run(['--adapter-path', join(closed, 'tiny-qwen2-lora')], env);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain(
      `Adapter Status: not_mounted (UID ${USER.uid} (the runtime user) cannot pass through ${closed}`,
    );
    expect(r.stderr).toContain(`hint: chmod a+x ${closed}`);
  });

  it('a base model it cannot read: BASE_MODEL_UNREADABLE, exit 3, before any verification', async () => {
    const base = join(root, 'closed-base.gguf');
    await cp(join(EXAMPLES, 'base', 'tiny-qwen2.gguf'), base);
    await closeUp(base, 'file');
    const r = await run(
      ['--adapter-path', join(models, 'adapters', 'readable-lora'), '--base-model-path', base],
      env,
    );
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(
      `✖ BASE_MODEL_UNREADABLE: UID ${USER.uid} (the user run runs as) cannot read ${base}`,
    );
    expect(r.stderr).toContain(`hint: chown ${USER.uid}:${USER.gid} ${base}   or   chmod a+r ${base}`);
    expect(r.stdout).not.toContain('Adapter Status');
  });

  it('the same adapter, readable: past step 1, verified and mounted (then no llama-server: exit 3)', async () => {
    const r = await run(['--adapter-path', join(models, 'adapters', 'readable-lora')], env);
    expect(r.stdout).toContain('Adapter Status: mounted (tiny-qwen2-lora 0.1.0');
    expect(r.stderr).toContain('LLAMA_SERVER_NOT_FOUND');
    expect(r.code).toBe(3);
  });

  it('the closed folder is closed to that user only: as root, run reads it (the drop is what is tested)', async () => {
    const dir = join(models, 'adapters', 'closed-lora');
    if (IS_ROOT) {
      const r = await run(['--adapter-path', dir], env, true);
      expect(r.stdout).toContain('Adapter Status: mounted');
      expect(r.stdout).not.toContain('not_mounted');
    } else {
      await expect(access(dir, constants.R_OK)).rejects.toThrow(/EACCES/u);
    }
  });
});
