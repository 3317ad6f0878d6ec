/**
 * The init `run` always runs under: the project's own (native/codi-init.c, built into dist/ by
 * `npm run build`) and how the command chooses it. The end-to-end proofs (as PID 1 and not) are in
 * test/llama/run.test.ts and test/e2e/run-processes.test.ts.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findInit, initParent, OWN_INIT, runUnderInit, UNDER_INIT } from '../../src/run/init.js';
import { alive, descendants, waitGone } from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

const INIT = join(import.meta.dirname, '../../dist/codi-init');

function underInit(script: string): { pid: number; exit: Promise<{ code: number | null; out: string }> } {
  const child = spawn(INIT, ['sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return {
    pid: child.pid ?? -1,
    exit: new Promise((resolve) =>
      child.on('close', (code) => {
        resolve({ code, out });
      }),
    ),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('codi-init', () => {
  it('exits with its child’s status, 128 + the signal when it was killed, 127 when it cannot run it', async () => {
    expect((await underInit('exit 7').exit).code).toBe(7);
    expect((await underInit('kill -KILL $$').exit).code).toBe(137);
    const missing = spawn(INIT, ['/no/such/program'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    missing.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise((r) => missing.on('close', r));
    expect(code).toBe(127);
    expect(err).toMatch(/codi-init: cannot execute \/no\/such\/program/u);
  });

  it('passes SIGTERM on to its child', async () => {
    const run = underInit('trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done');
    for (let i = 0; i < 100 && !(await Promise.race([run.exit.then(() => true), sleep(20)])); i++) {
      if (descendants(run.pid).some((p) => p.comm === 'sleep')) break;
    }
    process.kill(run.pid, 'SIGTERM');
    const { code, out } = await run.exit;
    expect(code).toBe(42);
    expect(out).toMatch(/got TERM/u);
  });

  it('adopts orphans as a child subreaper and reaps them: no zombie is left', async () => {
    // the subshell exits at once; its `sleep 0.3` is orphaned and reparented to codi-init
    const run = underInit('(sleep 0.3 &); sleep 1.2');
    await sleep(150);
    // codi-init's children: sh, and the orphan (the script's own `sleep 1.2` is under sh)
    const adopted = descendants(run.pid).filter((p) => p.ppid === run.pid && p.comm === 'sleep');
    expect(adopted.length).toBe(1);
    await sleep(500);
    expect(descendants(run.pid).filter((p) => p.state === 'Z')).toEqual([]);
    expect((await run.exit).code).toBe(0);
  });
});

describe('codi-init leaves nothing behind', () => {
  it('tells its child its own pid (CODI_INIT_PID)', async () => {
    const run = underInit('echo "init=$CODI_INIT_PID"');
    const { code, out } = await run.exit;
    expect(code).toBe(0);
    expect(out.trim()).toBe(`init=${run.pid}`);
  });

  it('kills what its child left behind, in a session of its own or double-forked, before it exits', async () => {
    const dir = await tempDir('codi-init-');
    const pids = join(dir, 'pids');
    // a setsid child and a double-forked daemon, both holding codi-init's stdout, then the child exits
    const run = underInit(
      `setsid sleep 1000 & echo $! >> ${pids}; (sh -c 'echo $$ >> ${pids}; exec sleep 1001' &); sleep 0.2; exit 3`,
    );
    // the pipes are released as soon as codi-init is done: 'close' fires, so the test does not hang
    const { code } = await run.exit;
    expect(code).toBe(3);
    const left = (await readFile(pids, 'utf8')).trim().split('\n').map(Number);
    expect(left).toHaveLength(2);
    expect(await waitGone(left, 1000)).toEqual([]);
  });

  it('stops its child with SIGTERM when its own parent dies, even by SIGKILL', async () => {
    const dir = await tempDir('codi-init-');
    const out = join(dir, 'out');
    // sh → codi-init → sh that records TERM: killing the outer sh is the parent's death
    const outer = spawn(
      'sh',
      [
        '-c',
        `${INIT} sh -c 'trap "echo TERM > ${out}; exit 0" TERM; while :; do sleep 0.05; done' & echo $!; wait`,
      ],
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    const initPid = await new Promise<number>((resolve) =>
      outer.stdout.once('data', (d: Buffer) => {
        resolve(Number(d.toString().trim()));
      }),
    );
    for (let i = 0; i < 100 && !descendants(initPid).some((p) => p.comm === 'sleep'); i++) await sleep(20);
    outer.kill('SIGKILL');
    expect(await waitGone([initPid], 3000)).toEqual([]);
    expect(await readFile(out, 'utf8')).toBe('TERM\n');
    expect(alive(initPid)).toBe(false);
  });
});

describe('choosing an init', () => {
  it('trusts its parent as the init only when the parent runs the program it was told', async () => {
    // codi-init runs sh, which waits: sh's parent is the init, for as long as it sleeps
    const run = underInit('echo ready; sleep 5');
    let shPid = -1;
    for (let i = 0; i < 100 && shPid < 0; i++) {
      shPid = descendants(run.pid).find((p) => p.comm === 'sh')?.pid ?? -1;
      if (shPid < 0) await sleep(20);
    }
    expect(initParent({ [UNDER_INIT]: OWN_INIT }, run.pid)).toBe(run.pid);
    // told another program, no variable, or PID 1: not trusted
    expect(initParent({ [UNDER_INIT]: '/bin/sh' }, run.pid)).toBeNull();
    expect(initParent({}, run.pid)).toBeNull();
    expect(initParent({ [UNDER_INIT]: OWN_INIT }, 1)).toBeNull();
    process.kill(run.pid, 'SIGTERM');
    await run.exit;
  });

  it('prefers the project’s own codi-init, else tini on PATH as a subreaper, else none', async () => {
    const dir = await tempDir('codi-init-');
    await mkdir(join(dir, 'bin'));
    expect(await findInit({ PATH: join(dir, 'bin') })).toEqual([OWN_INIT]);
    const missing = join(dir, 'no-codi-init');
    expect(await findInit({ PATH: join(dir, 'bin') }, missing)).toBeNull();
    await writeFile(join(dir, 'bin/tini'), '#!/bin/sh\nexit 0\n');
    await chmod(join(dir, 'bin/tini'), 0o755);
    expect(await findInit({ PATH: join(dir, 'bin') }, missing)).toEqual([
      join(dir, 'bin/tini'),
      '-s',
      '-p',
      'SIGTERM',
      '--',
    ]);
  });

  it('runs a command under the init and returns its status, naming the init to it', async () => {
    const dir = await tempDir('codi-init-');
    const seen = join(dir, 'env');
    const status = await runUnderInit(
      [OWN_INIT],
      ['sh', '-c', `printf %s "$${UNDER_INIT}" > ${seen}; exit 5`],
    );
    expect(status).toBe(5);
    expect(await readFile(seen, 'utf8')).toBe(OWN_INIT);
  });
});
