#!/usr/bin/env node
// Entry point. Two commands start without oclif, whose loading is most of the cost of a short
// command: `--version` (release scripts and the HEALTHCHECK call it often) and `run` (the container
// entrypoint; readiness waits on it). Their help, and every other command, go through oclif.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const wantsHelp = args.some((a) => a === '--help' || a === '-h' || a === 'help');
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  process.stdout.write(
    `${pkg.name}/${pkg.version} ${process.platform}-${process.arch} node-${process.version}\n`,
  );
} else if (args[0] === 'run' && !wantsHelp) {
  const { runMain } = await import('../dist/run-entry.js');
  process.exitCode = await runMain(args.slice(1));
} else {
  const { execute } = await import('@oclif/core');
  await execute({ dir: import.meta.url });
}
