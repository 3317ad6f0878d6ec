/**
 * `run` as PID 1: the project's init (native/codi-init.c, built into dist/ by `npm run build`) and how
 * bin/run.js chooses it. The end-to-end proof in a PID namespace is in test/llama/run.test.ts.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findInit, needsInit, OWN_INIT, runUnderInit, UNDER_INIT } from '../../src/run/pid1.js';
import { descendants } from '../helpers/run-process.js';
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

describe('choosing an init', () => {
  it('is needed only as PID 1, and not again under one', () => {
    expect(needsInit(1, {})).toBe(true);
    expect(needsInit(1, { [UNDER_INIT]: '1' })).toBe(false);
    expect(needsInit(4242, {})).toBe(false);
  });

  it('prefers the project’s own codi-init, else tini on PATH as a subreaper, else none', async () => {
    const dir = await tempDir('codi-pid1-');
    await mkdir(join(dir, 'bin'));
    expect(await findInit({ PATH: join(dir, 'bin') })).toEqual([OWN_INIT]);
    const missing = join(dir, 'no-codi-init');
    expect(await findInit({ PATH: join(dir, 'bin') }, missing)).toBeNull();
    await writeFile(join(dir, 'bin/tini'), '#!/bin/sh\nexit 0\n');
    await chmod(join(dir, 'bin/tini'), 0o755);
    expect(await findInit({ PATH: join(dir, 'bin') }, missing)).toEqual([join(dir, 'bin/tini'), '-s', '--']);
  });

  it('runs a command under the init and returns its status, marking it as under an init', async () => {
    const dir = await tempDir('codi-pid1-');
    const seen = join(dir, 'env');
    const status = await runUnderInit(
      [OWN_INIT],
      ['sh', '-c', `printf %s "$${UNDER_INIT}" > ${seen}; exit 5`],
    );
    expect(status).toBe(5);
    expect(await readFile(seen, 'utf8')).toBe('1');
  });
});
