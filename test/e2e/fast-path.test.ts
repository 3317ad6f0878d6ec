/**
 * bin/run.js starts plain command lines without oclif (src/fast-path.ts). Whatever path a command line
 * takes, a user must see the same thing: each case runs twice, once on the fast path and once with
 * CODI_FAST_PATH=0 (oclif), and stdout, stderr and the exit status must match.
 */
import { chmod, cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli, type CliResult } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const EXAMPLE = 'examples/adapters/tiny-qwen2-lora';
const BASE = 'examples/base/tiny-qwen2.gguf';

/** Timings differ run to run; everything else must not. */
function normalise(text: string): string {
  return (
    text
      .replace(/"durationMs": \d+/gu, '"durationMs": 0')
      .replace(/\d+\.\d\d s\b/gu, '0.00 s')
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/gu, 'TIMESTAMP')
      .replace(/\.\d+\.[0-9a-f]+\.tmp/gu, '.TMP')
      // oclif warns about a command that never parsed (a usage error) outside production (NODE_ENV=test)
      .replace(/\(node:\d+\) \[UnparsedCommand\][^\n]*\n(?:\(Use `node --trace-warnings[^\n]*\n)?/gu, '')
  );
}

async function both(args: string[], env: Record<string, string> = {}): Promise<[CliResult, CliResult]> {
  const fast = await runCli(args, { env });
  const oclif = await runCli(args, { env: { ...env, CODI_FAST_PATH: '0' } });
  return [fast, oclif];
}

function expectSame([fast, oclif]: [CliResult, CliResult]): CliResult {
  expect({ code: fast.code, stdout: normalise(fast.stdout), stderr: normalise(fast.stderr) }).toEqual({
    code: oclif.code,
    stdout: normalise(oclif.stdout),
    stderr: normalise(oclif.stderr),
  });
  return fast;
}

let root: string;
let work: string;
beforeAll(async () => {
  work = await tempDir('codi-fast-');
  // mkdtemp makes it 0700: mount rightly refuses a volume UID 1000 cannot reach
  await chmod(work, 0o755);
  root = join(work, 'models');
  await cp('examples/adapters', join(root, 'adapters'), { recursive: true });
});

describe('fast path and oclif agree', () => {
  it.each([
    ['verify, valid, human', ['verify', EXAMPLE]],
    ['verify, valid, --json', ['verify', EXAMPLE, '--json']],
    ['verify --strict --base', ['verify', EXAMPLE, '--strict', `--base=${BASE}`, '--json']],
    ['verify, invalid (exit 1)', ['verify', 'examples/adapters/broken-checksum']],
    ['verify, invalid, --json', ['verify', 'examples/adapters/broken-dora', '--json']],
    ['verify, missing folder (exit 3)', ['verify', 'no/such/adapter', '--json']],
    ['verify --no-color', ['verify', 'examples/adapters/broken-unpaired', '--no-color']],
  ])('%s', async (_name, args) => {
    const r = expectSame(await both(args));
    expect(r.stdout.length + r.stderr.length).toBeGreaterThan(0);
  });

  it('convert, human and --json, and a cache hit', async () => {
    const out = join(work, 'converted.gguf');
    expectSame(await both(['convert', EXAMPLE, '--base', BASE, '--out', out, '--outtype', 'f16']));
    const r = expectSame(await both(['convert', EXAMPLE, '--base', BASE, '--out', out, '--json']));
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ cached: false, outtype: 'f32', tensors: 28 });
    // without --out: the cache next to the adapter, converted by the first run, a hit for the second
    const adapter = join(work, 'adapter');
    await cp(EXAMPLE, adapter, { recursive: true });
    const [fast, oclif] = await both(['convert', adapter, '--base', BASE, '--json']);
    expect(fast.json).toMatchObject({ cached: false });
    expect(oclif.json).toMatchObject({ cached: true });
  });

  it('convert errors: a base that is not a model, an adapter with DoRA', async () => {
    const notModel = join(work, 'not-a-model.gguf');
    await writeFile(notModel, 'GGUF but not really');
    expectSame(await both(['convert', EXAMPLE, '--base', notModel]));
    const r = expectSame(await both(['convert', 'examples/adapters/broken-dora', '--base', BASE, '--json']));
    expect(r.code).toBe(1);
  });

  it('list: flag, environment variable, --json', async () => {
    expectSame(await both(['list', '--root', root]));
    const r = expectSame(await both(['list', '--json'], { MODEL_MOUNT_PATH: root }));
    expect((r.json as { adapters: unknown[] }).adapters.length).toBeGreaterThan(3);
    expectSame(await both(['list', `--root=${join(work, 'nowhere')}`, '--json']));
  });

  it('mount: installed by the first run, unchanged for the second; then a conflict', async () => {
    const target = join(work, 'mount-root');
    await mkdir(join(target, 'adapters'), { recursive: true });
    const [fast, oclif] = await both(['mount', EXAMPLE, '--root', target, '--activate', '--json']);
    expect(fast.json).toMatchObject({ action: 'installed' });
    expect(oclif.json).toMatchObject({ action: 'unchanged' });
    expectSame(await both(['mount', EXAMPLE, '--root', target, '--lock-timeout', '5']));
    expectSame(await both(['mount', 'examples/adapters/broken-checksum', '--root', target, '--id', 'x']));
  });

  it('promote --dry-run, and a rules file that is not there', async () => {
    const rules = join(work, 'rules.yml');
    await cp('examples/patterns/rules.yml', rules);
    const r = expectSame(
      await both(['promote', EXAMPLE, '--rules', rules, '--eval', 'examples/eval.json', '--dry-run']),
    );
    expect(r.stdout).toContain('+');
    expectSame(await both(['promote', EXAMPLE, '--rules', join(work, 'none.yml'), '--json']));
  });

  it.each([
    ['an unknown flag', ['verify', EXAMPLE, '--bogus']],
    ['a missing argument', ['verify']],
    ['a missing required flag', ['convert', EXAMPLE]],
    ['a value outside the options', ['convert', EXAMPLE, '--base', BASE, '--outtype', 'q4_0']],
    ['a negative integer below min', ['mount', EXAMPLE, '--lock-timeout', '-1']],
    ['a non-integer', ['promote', EXAMPLE, '--rules', 'x.yml', '--lock-timeout', '1.5', '--json']],
    ['an extra argument', ['list', 'extra']],
    ['a flag given twice', ['verify', EXAMPLE, '--strict', '--strict']],
    ['a short flag', ['verify', EXAMPLE, '-h']],
  ])('usage errors are oclif’s either way: %s', async (_name, args) => {
    const r = expectSame(await both(args));
    expect(r.code === 2 || r.code === 0).toBe(true);
  });
});
