/**
 * The front door: every command line comes in here (bin/run.js). A command's line is parsed against
 * its registry entry and its behaviour loaded and run, without loading oclif (most of a short
 * command's start-up); help (`--help`, `-h`, `help`, no command) goes to oclif, whose command classes
 * are generated from the same registry. `CODI_FAST_PATH=0` sends commands through oclif too (its
 * lookup and the generated class), which ends here in `runCommand` all the same.
 */
import type { EarlyHash } from '../checksum.js';
import { VERSION } from '../version.js';
import {
  colourFor,
  finishError,
  finishOclif,
  finishText,
  guardPipes,
  Outcome,
  stdoutGone,
} from './finish.js';
import type { CommandEntry } from './registry.js';

/** What bin/run.js gives the front door: how to load oclif, and the file oclif finds the package from. */
export interface Launcher {
  oclif: () => Promise<typeof import('@oclif/core')>;
  bin: string;
}

export async function main(argv: readonly string[], launcher: Launcher): Promise<void> {
  guardPipes();
  const [name] = argv;
  if (argv.length === 1 && (name === '--version' || name === '-v')) {
    finishText(`codi-adapter/${VERSION} ${process.platform}-${process.arch} node-${process.version}\n`);
    return;
  }
  // loaded past --version, which release scripts and health checks call often
  const { COMMANDS, commandNamed } = await import('./registry.js');
  const entry = name === undefined ? undefined : commandNamed(name);
  if (name === undefined || wantsHelp(argv) || (entry !== undefined && process.env.CODI_FAST_PATH === '0')) {
    await viaOclif(argv, launcher);
  } else if (entry === undefined) {
    const json = argv.includes('--json');
    const [{ usageError }] = await Promise.all([import('../errors.js'), colourFor(argv)]);
    await finishError(
      usageError(
        `command ${name} not found`,
        `the commands are ${Object.keys(COMMANDS).join(', ')}; see codi-adapter --help`,
      ),
      json,
    );
  } else {
    await runCommand(name, entry, argv.slice(1));
  }
}

function wantsHelp(argv: readonly string[]): boolean {
  return argv.some((a) => a === '--help' || a === '-h' || a === 'help');
}

/** Help and topics (and commands under `CODI_FAST_PATH=0`): oclif, from the manifest. */
async function viaOclif(argv: readonly string[], launcher: Launcher): Promise<void> {
  const { flush, run } = await launcher.oclif();
  try {
    await run([...argv], launcher.bin);
    // flush waits for stdout to drain, which a closed pipe never does
    await Promise.race([flush(), stdoutGone]);
  } catch (err) {
    await colourFor(argv);
    await finishOclif(err, argv.includes('--json'));
  }
}

/** Runs one command: `argv` is its command line after its name. */
export async function runCommand(name: string, entry: CommandEntry, argv: readonly string[]): Promise<void> {
  const [{ trace }, { parseCommandLine }] = await Promise.all([import('../trace.js'), import('./parse.js')]);
  trace(`command: ${name}`);
  let parsed;
  try {
    parsed = parseCommandLine(entry.spec, argv, process.env);
  } catch (err) {
    await colourFor(argv);
    await finishError(err, argv.includes('--json'));
    return;
  }
  const dir = entry.earlyHash === undefined ? undefined : parsed.args[entry.earlyHash];
  // on a terminal verify shows hashing progress, which a hash begun here would not report
  const earlyHash =
    dir !== undefined && (parsed.json || !process.stderr.isTTY) ? await beginEarly(dir) : null;
  await colourFor(argv);
  trace('parsed');
  const outcome = new Outcome(parsed.json);
  try {
    const command = await entry.load();
    outcome.done(await command(parsed, outcome.io, { argv, earlyHash }));
  } catch (err) {
    earlyHash?.hash.cancel();
    await outcome.fail(err);
  }
}

/**
 * The weights' hash, begun in a worker before the command's code is loaded: the other core hashes
 * while this one loads and inspects. Loaded only when a command asks for it.
 */
async function beginEarly(dir: string): Promise<EarlyHash | null> {
  const [{ beginEarlyHash }, { SAFETENSORS_FILE }] = await Promise.all([
    import('../checksum.js'),
    import('../layout.js'),
  ]);
  return beginEarlyHash(dir, SAFETENSORS_FILE);
}
