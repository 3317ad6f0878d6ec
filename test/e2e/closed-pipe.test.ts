/**
 * A reader that goes away before the output is written (`codi-adapter list | head -1`): no stack trace,
 * and the exit status is the one the command would have had.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, REPO } from '../helpers/cli.js';

function withClosedStdout(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: REPO,
    env: { ...process.env, NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // closed before the command writes anything: every write it makes meets EPIPE
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) =>
    child.on('close', (code) => {
      resolve({ code, stderr });
    }),
  );
}

const VALID = join(REPO, 'examples/adapters/tiny-qwen2-lora');
const BROKEN = join(REPO, 'examples/adapters/broken-checksum');

describe('a closed stdout', () => {
  it.each([
    ['verify, valid', ['verify', VALID], {}, 0],
    ['verify, invalid', ['verify', BROKEN], {}, 1],
    ['verify --json through oclif', ['verify', BROKEN, '--json'], { CODI_FAST_PATH: '0' }, 1],
    ['list', ['list', '--root', join(REPO, 'examples')], {}, 0],
    ['--help', ['verify', '--help'], {}, 0],
  ] as const)('%s: no stack trace, the usual exit status', async (_name, args, env, status) => {
    const { code, stderr } = await withClosedStdout(args, env);
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /u);
    expect(code).toBe(status);
  });
});
