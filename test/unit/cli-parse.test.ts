import { describe, expect, it } from 'vitest';
import { isCodiError } from '../../src/errors.js';
import { parseCommandLine, type ParsedCommandLine } from '../../src/cli/parse.js';
import { COMMANDS } from '../../src/cli/registry.js';
import type { CommandSpec } from '../../src/cli/spec.js';

const { convert, list, mount, verify } = COMMANDS;
const [convertSpec, listSpec, mountSpec, verifySpec] = [convert.spec, list.spec, mount.spec, verify.spec];

/** The command line read against `spec`, or null when it is a usage error (exit 2). */
function parseFast(
  spec: CommandSpec,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): ParsedCommandLine | null {
  try {
    return parseCommandLine(spec, argv, env);
  } catch (e) {
    if (isCodiError(e) && e.code === 'USAGE' && e.exitCode === 2) return null;
    throw e;
  }
}

describe('parseCommandLine', () => {
  it('reads a plain command line: args, value flags in both spellings, booleans, defaults', () => {
    expect(parseFast(convertSpec, ['a', '--base', 'b.gguf', '--out=o.gguf', '--force'], {})).toEqual({
      args: { dir: 'a' },
      flags: { base: 'b.gguf', out: 'o.gguf', force: true, outtype: 'f32' },
      json: false,
    });
    expect(parseFast(verifySpec, ['--json', 'a', '--no-color'], {})).toEqual({
      args: { dir: 'a' },
      flags: { strict: false },
      json: true,
    });
  });

  it('fills a flag from its environment variable (non-empty only), the flag winning', () => {
    expect(parseFast(listSpec, [], { MODEL_MOUNT_PATH: '/srv' })?.flags.root).toBe('/srv');
    expect(parseFast(listSpec, [], { MODEL_MOUNT_PATH: '' })?.flags.root).toBe('/models');
    expect(parseFast(listSpec, ['--root', '/x'], { MODEL_MOUNT_PATH: '/srv' })?.flags.root).toBe('/x');
  });

  it('reads integers as numbers and checks the minimum', () => {
    expect(parseFast(mountSpec, ['s', '--lock-timeout', '7'], {})?.flags['lock-timeout']).toBe(7);
    expect(parseFast(mountSpec, ['s'], {})?.flags['lock-timeout']).toBe(60);
    expect(parseFast(mountSpec, ['s', '--lock-timeout=-1'], {})).toBeNull();
    expect(parseFast(mountSpec, ['s', '--lock-timeout', '1e3'], {})).toBeNull();
  });

  it.each([
    ['unknown flag', ['a', '--nope']],
    ['short flag', ['a', '-f']],
    ['-- separator', ['a', '--', '--force']],
    ['missing required flag', ['a']],
    ['missing argument', ['--base', 'b']],
    ['extra argument', ['a', 'b', '--base', 'c']],
    ['value outside the options', ['a', '--base', 'b', '--outtype', 'f8']],
    ['flag without its value', ['a', '--base']],
    ['value that looks like a flag', ['a', '--base', '--force']],
    ['empty value', ['a', '--base=']],
    ['value on a boolean', ['a', '--base', 'b', '--force=yes']],
    ['--no- on a boolean without allowNo', ['a', '--base', 'b', '--no-force']],
    ['a flag twice', ['a', '--base', 'b', '--base', 'c']],
    ['an empty word', ['', '--base', 'b']],
  ])('refuses, as a usage error: %s', (_name, argv) => {
    expect(parseFast(convertSpec, argv, {})).toBeNull();
  });
});
