/**
 * bin/run.js's fast path: `convert`, `verify`, `list`, `mount` and `promote` start without loading
 * oclif (about 150 ms of a short command), reading the command line against the same specs oclif's
 * flags are built from (src/cli/spec.ts). Help, and any command line `parseFast` declines, go to
 * oclif, whose output and exit codes the fast path reproduces exactly (test/e2e/fast-path.test.ts).
 * `CODI_FAST_PATH=0` turns it off.
 *
 * `verify` also begins hashing the adapter's weights here, in a worker thread, before the rest of the
 * program is loaded: the other core hashes while this one loads and inspects. (`convert` hashes the
 * weights in its conversion pass, from the bytes it converts.)
 */
import type { EarlyHash } from './checksum.js';
import type { CommandInput, CommandIO, CommandSpec } from './cli/spec.js';
import { parseFast } from './cli/spec.js';
import { convertSpec, listSpec, mountSpec, promoteSpec, verifySpec } from './cli/specs.js';
import { trace } from './trace.js';

interface FastCommand {
  spec: CommandSpec;
  main: (input: CommandInput, io: CommandIO, early: EarlyHash | null) => Promise<unknown>;
  /** the argument naming an adapter directory whose weights can be hashed at once */
  hashes?: string;
}

const COMMANDS: Record<string, FastCommand> = {
  convert: {
    spec: convertSpec,
    main: async (input, io) => (await loaded(import('./cli/convert.js'))).convertMain(input, io),
  },
  verify: {
    spec: verifySpec,
    main: async (input, io, early) =>
      (await loaded(import('./cli/verify.js'), early)).verifyMain(input, io, early),
    hashes: 'dir',
  },
  list: {
    spec: listSpec,
    main: async (input, io) => (await loaded(import('./cli/list.js'))).listMain(input, io),
  },
  mount: {
    spec: mountSpec,
    main: async (input, io) => (await loaded(import('./cli/mount.js'))).mountMain(input, io),
  },
  promote: {
    spec: promoteSpec,
    main: async (input, io) => (await loaded(import('./cli/promote.js'))).promoteMain(input, io),
  },
};

/**
 * A command's module, once loaded; then V8 is asked to tier functions up more patiently. A command
 * runs for a fraction of a second on two cores: V8's optimising compiler, started on functions that
 * are hot only for a moment (header parsing, name checks), costs more than it returns, in compile
 * time on the other core and in memory touched for the first time (~15 µs a page on the VMs this
 * runs on; `CODI_TRACE=1` counts the faults). With a budget 4× V8's default such functions stay with
 * the interpreter and the baseline compiler, while loops over tensor data still run long enough to
 * be optimised. The flag decides only when a function tiers up, never what it computes. It is set
 * after the command's modules have loaded (Node's built-in modules loaded after a flag change cannot
 * use their code cache) and not while the early hashing worker runs (flags are process-wide).
 */
async function loaded<T>(module: Promise<T>, worker: EarlyHash | null = null): Promise<T> {
  const m = await module;
  if (worker === null) process.getBuiltinModule('node:v8').setFlagsFromString('--interrupt-budget=270336');
  return m;
}

/** Loaded only once this path is taken: help and declined command lines go to oclif without it. */
async function beginEarly(dir: string): Promise<EarlyHash | null> {
  const [{ beginEarlyHash }, { SAFETENSORS_FILE }] = await Promise.all([
    import('./checksum.js'),
    import('./layout.js'),
  ]);
  return beginEarlyHash(dir, SAFETENSORS_FILE);
}

/** Whether bin/run.js may try the fast path for this command line. */
export function fastPathFor(argv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  const [command] = argv;
  return (
    command !== undefined &&
    command in COMMANDS &&
    env.CODI_FAST_PATH !== '0' &&
    // oclif's other way to ask for JSON
    env.CODI_ADAPTER_CONTENT_TYPE === undefined &&
    !argv.some((a) => a === '--help' || a === '-h' || a === 'help')
  );
}

/**
 * Runs `argv` (command first) without oclif; resolves to the exit status, or to null when oclif
 * should run it instead (nothing has been done or printed then).
 */
export async function runFast(argv: readonly string[]): Promise<number | null> {
  const [name = '', ...rest] = argv;
  const command = COMMANDS[name];
  if (!command) return null;
  trace(`fast path: ${name}`);
  const parsed = parseFast(command.spec, rest, process.env);
  if (!parsed) return null;
  const { json } = parsed;
  const dir = command.hashes ? parsed.args[command.hashes] : undefined;
  // verify on a terminal shows hashing progress, which a hash begun here would not report
  const early = dir !== undefined && (json || !process.stderr.isTTY) ? await beginEarly(dir) : null;
  const { colourFor, errorJson, renderError, toCodiError, writeJson } = await import('./error-output.js');
  await colourFor(rest);
  trace('fast path: parsed');
  let exitCode = 0;
  const io: CommandIO = {
    json,
    log: (line = '') => {
      if (!json) process.stdout.write(`${line}\n`);
    },
    setExitCode: (code) => {
      exitCode = code;
    },
  };
  try {
    const result = await command.main(parsed, io, early);
    if (json && result !== undefined) writeJson(result);
    return exitCode;
  } catch (err) {
    early?.hash.cancel();
    const error = toCodiError(err);
    if (json) writeJson(errorJson(error));
    else process.stderr.write(renderError(error));
    return error.exitCode;
  }
}
