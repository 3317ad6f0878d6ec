#!/usr/bin/env node
// Entry point. oclif's loading is most of the cost of a short command, so commands start without it
// where they can: `--version` (release scripts and the HEALTHCHECK call it often), `run` (the container
// entrypoint; readiness waits on it), and the other commands when their command line is plain
// (src/fast-path.ts). Help, and whatever the fast path declines, go through oclif.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// A reader that goes away (`codi-adapter list | head -1`) must not become a stack trace: the rest of the
// output is dropped, the command finishes, and its exit status is the one it would have had.
let stdoutClosed = () => undefined;
const stdoutGone = new Promise((resolve) => (stdoutClosed = resolve));
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', () => {
    if (stream === process.stdout) stdoutClosed();
  });
}

const args = process.argv.slice(2);
const wantsHelp = args.some((a) => a === '--help' || a === '-h' || a === 'help');
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  process.stdout.write(
    `${pkg.name}/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`,
  );
} else if (args[0] === 'run' && !wantsHelp) {
  // as PID 1, run goes on under an init that reaps orphans (src/pid1.ts); this process passes signals on
  const pid1 = process.pid === 1 ? await import('../dist/run/pid1.js') : null;
  const init = pid1?.needsInit() ? await pid1.findInit() : null;
  if (pid1 && init !== null) {
    const self = [process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...args];
    process.exitCode = await pid1.runUnderInit(init, self);
  } else {
    const { runMain } = await import('../dist/run-entry.js');
    process.exitCode = await runMain(args.slice(1));
  }
} else if (!(await fast())) {
  const { flush, run } = await import('@oclif/core');
  try {
    await run(args, import.meta.url);
    // flush waits for stdout to drain, which a closed pipe never does
    await Promise.race([flush(), stdoutGone]);
  } catch (err) {
    if (err?.code === 'EEXIT') {
      // oclif's own exit (this.exit): its code, nothing to print
      process.exitCode = err.oclif?.exit ?? 0;
      process.exit();
    }
    // what fails before a command runs (an unknown command): the same output as a command's errors
    const { errorJson, renderError, toCodiError, writeJson } = await import('../dist/error-output.js');
    const error = toCodiError(err);
    if (args.includes('--json')) writeJson(errorJson(error));
    else process.stderr.write(renderError(error));
    process.exitCode = error.exitCode;
  }
}

/** The other commands without oclif when their command line is plain (src/fast-path.ts). */
async function fast() {
  // bundled by the build (scripts/bundle-fast-path.js); the plain modules when it is not there
  const { fastPathFor, runFast } = await import('../dist/fast-path.bundle.js').catch((e) => {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('fast-path.bundle.js')) throw e;
    return import('../dist/fast-path.js');
  });
  if (!fastPathFor(args, process.env)) return false;
  const code = await runFast(args);
  if (code === null) return false;
  process.exitCode = code;
  return true;
}
