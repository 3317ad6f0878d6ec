import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { INTERRUPT_STATUS } from '../../src/cli/finish.js';
import { OCLIF_COMMANDS } from '../../src/cli/oclif.js';
import { COMMANDS } from '../../src/cli/registry.js';
import { signalExitStatus } from '../../src/errors.js';
import { RUN_SETTINGS } from '../../src/run/settings.js';

interface ManifestFlag {
  type: 'boolean' | 'option';
  allowNo?: boolean;
  description?: string;
}
const manifest = JSON.parse(readFileSync(new URL('../../oclif.manifest.json', import.meta.url), 'utf8')) as {
  commands: Record<string, { flags: Record<string, ManifestFlag>; args: Record<string, unknown> }>;
};

describe('the command registry', () => {
  it('is where oclif finds its commands: the generated classes and the built manifest list the same', () => {
    const names = Object.keys(COMMANDS).sort();
    expect(Object.keys(OCLIF_COMMANDS).sort()).toEqual(names);
    expect(Object.keys(manifest.commands).sort()).toEqual(names);
  });

  it.each(Object.entries(COMMANDS))("%s: help shows the parser's flags and arguments", (name, entry) => {
    const help = manifest.commands[name];
    expect(Object.keys(help?.args ?? {})).toEqual(entry.spec.args.map((a) => a.name));
    const flags = Object.keys(help?.flags ?? {}).filter((f) => f !== 'json' && f !== 'no-color');
    expect(flags.sort()).toEqual(Object.keys(entry.spec.flags).sort());
    for (const [flag, spec] of Object.entries(entry.spec.flags)) {
      const shown = help?.flags[flag];
      expect(shown?.type === 'boolean', flag).toBe(spec.kind === 'boolean');
      if (spec.kind === 'boolean') {
        expect(shown?.allowNo ?? false, flag).toBe(spec.allowNo ?? false);
        // `--airgap=false` is accepted: help says so
        if (spec.allowValue) expect(shown?.description, flag).toContain(`--${flag}=true|false`);
      }
    }
  });

  it('gives run one flag per setting row', () => {
    expect(Object.keys(COMMANDS.run.spec.flags)).toEqual(RUN_SETTINGS.map((s) => s.flag));
  });

  it.each(Object.entries(COMMANDS))('%s: its behaviour loads', async (_name, entry) => {
    expect(typeof (await entry.load())).toBe('function');
  });
});

describe('exit statuses of interrupts', () => {
  it('are 128 + the signal number, as a shell reports them', () => {
    for (const [signal, status] of Object.entries(INTERRUPT_STATUS)) {
      expect(status).toBe(signalExitStatus(signal as NodeJS.Signals));
    }
    expect(INTERRUPT_STATUS).toEqual({ SIGHUP: 129, SIGINT: 130, SIGTERM: 143 });
  });
});
