/**
 * The README's main job, `npm run demo` (scripts/demo.sh), end to end with the real llama-server: mount
 * the example adapter with --activate, `run` it with the demo app, which asks with the adapter at scale 1
 * and at scale 0; run then stops llama-server and exits 0, leaving nothing behind.
 */
import { spawn } from 'node:child_process';
import { chmod, readdir } from 'node:fs/promises';
import { expect, it } from 'vitest';
import { REPO } from '../helpers/cli.js';
import { llamaServerBinary } from '../helpers/llama.js';
import { processesMentioning } from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

it('scripts/demo.sh asks with the adapter at scale 1 and 0, prints both answers, and exits 0', async () => {
  const bin = await llamaServerBinary();
  const tmp = await tempDir('codi-demo-test-');
  // the models root below it must be reachable by UID 1000, as mount checks
  await chmod(tmp, 0o755);
  const child = spawn('bash', ['scripts/demo.sh'], {
    cwd: REPO,
    env: { ...process.env, LLAMA_SERVER_BIN: bin, TMPDIR: tmp, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise((resolve) => child.on('close', resolve));
  expect(code, `${out}\n${err}`).toBe(0);

  expect(out).toMatch(/Adapter Status: mounted/u);
  expect(out).toMatch(/^\[app\] models served: tiny-qwen2 \(base\), tiny-qwen2-lora 0\.1\.0 \(default\)$/mu);
  const answer = (scale: number): string | undefined =>
    new RegExp(`^\\[app\\] adapter at scale ${scale}: (".*")$`, 'mu').exec(out)?.[1];
  const one = answer(1);
  const zero = answer(0);
  expect(one).toBeDefined();
  expect(zero).toBeDefined();
  expect(one).not.toBe(zero);
  expect(out).toMatch(/\[run\] llama-server \(pid \d+\) stopped: exited with code 0/u);
  expect(err).toMatch(/demo finished: run stopped llama-server and exited 0/u);
  // the demo's models root is removed and nothing it started is left
  expect(await readdir(tmp)).toEqual([]);
  expect(processesMentioning(tmp)).toEqual([]);
}, 180_000);
