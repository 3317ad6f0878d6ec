import { describe, expect, it } from 'vitest';
import { CodiError } from '../../src/errors.js';
import { parseCommandLine } from '../../src/cli/parse.js';
import { COMMANDS } from '../../src/cli/registry.js';

/** `run`'s command line through the one parser: the flags it was given (unset ones left out). */
function parseRunArgv(argv: readonly string[]): { flags: Record<string, unknown>; json: boolean } {
  const { flags, json } = parseCommandLine(COMMANDS.run.spec, argv, {});
  return { flags: Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)), json };
}

describe("run's command line (the one parser, with run's flags from the settings)", () => {
  it('reads --name value, --name=value, boolean flags and their --no- forms, --json and --no-color', () => {
    expect(
      parseRunArgv([
        '--llm-port',
        '9000',
        '--app-command=none',
        '--no-airgap',
        '--llm-enabled',
        '--json',
        '--no-color',
      ]),
    ).toEqual({
      flags: { 'llm-port': '9000', 'app-command': 'none', airgap: false, 'llm-enabled': true },
      json: true,
    });
  });

  it('reads a boolean flag given a value, spelled as its variable would be', () => {
    expect(parseRunArgv(['--llm-enabled=YES']).flags).toEqual({ 'llm-enabled': true });
  });

  it('passes --airgap=<value> on for its setting to read (true, false or strict)', () => {
    expect(parseRunArgv(['--airgap=strict']).flags).toEqual({ airgap: 'strict' });
    expect(parseRunArgv(['--airgap=false']).flags).toEqual({ airgap: 'false' });
    expect(parseRunArgv(['--airgap']).flags).toEqual({ airgap: true });
    expect(parseRunArgv(['--no-airgap']).flags).toEqual({ airgap: false });
  });

  it('keeps a value that starts with dashes when given with =', () => {
    expect(parseRunArgv(['--app-command=--weird']).flags['app-command']).toBe('--weird');
  });

  it.each([
    [['--bogus'], /Nonexistent flag: --bogus/],
    [['--llm-port'], /--llm-port expects a value/],
    [['serve'], /Unexpected argument: serve/],
    [['--llm-enabled=maybe'], /--llm-enabled must be true or false, got "maybe"/],
    [['--no-airgap=false'], /Nonexistent flag: --no-airgap/],
    [['--no-llm-port'], /Nonexistent flag/],
  ])('refuses %j as a usage error (exit 2)', (argv, message) => {
    let error: unknown;
    try {
      parseRunArgv(argv);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CodiError);
    expect((error as CodiError).exitCode).toBe(2);
    expect((error as CodiError).message).toMatch(message);
  });
});
