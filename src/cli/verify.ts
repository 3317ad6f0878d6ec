/** `verify`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import type { Ora } from 'ora';
import { adoptEarly } from '../checksum.js';
import { ExitCode } from '../errors.js';
import { countFindings } from '../findings.js';
import { progressText, renderChecklist } from '../render.js';
import { plural } from '../text.js';
import { reportExitCode, verifyAdapter, type VerifyOptions, type VerifyReport } from '../verify.js';
import {
  booleanFlag,
  requiredString,
  stringFlag,
  type CommandContext,
  type CommandInput,
  type CommandIO,
} from './spec.js';
import { nowMs } from '../clock.js';

export type VerifyResult = VerifyReport;

/** Files smaller than this hash too fast for a progress indicator to help. */
const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

export async function verifyMain(
  input: CommandInput,
  io: CommandIO,
  { earlyHash }: Pick<CommandContext, 'earlyHash'> = { earlyHash: null },
): Promise<VerifyResult> {
  try {
    const options: VerifyOptions = { strict: booleanFlag(input, 'strict') };
    // the front door began hashing the weights before this module was loaded
    if (earlyHash) options.weightsHash = adoptEarly(earlyHash);
    const base = stringFlag(input, 'base');
    if (base) {
      // the GGUF reader and the architecture tables, loaded only when there is a base to check
      const { baseCheckFor, readBaseForCheck } = await import('../base-model.js');
      options.baseCheck = baseCheckFor(await readBaseForCheck(base));
    }
    const trust = stringFlag(input, 'trust');
    if (trust) {
      // the key reader, loaded only when there are keys to trust
      const { loadTrustedKeys } = await import('../signing/keys.js');
      options.trust = await loadTrustedKeys(trust);
    }
    let spinner: Ora | undefined;
    // a real terminal only: ora is slow to load, and a zero-width one (a bare pty) makes it loop
    if (!io.json && process.stderr.isTTY && process.stderr.columns > 0) {
      const [{ default: ora }, { progressMinBytes }] = await Promise.all([
        import('ora'),
        import('../test-hooks.js'),
      ]);
      const started = nowMs();
      const minBytes = progressMinBytes(PROGRESS_MIN_BYTES);
      options.onHashProgress = ({ file, bytesDone, bytesTotal }) => {
        if (bytesTotal < minBytes) return;
        const text = progressText(file, bytesDone, bytesTotal, started);
        // stdin is left alone: ora would otherwise put it in raw mode to swallow keystrokes; the
        // text is there from the first frame (ora draws a changed text at its next tick only)
        if (spinner) spinner.text = text;
        else spinner = ora({ stream: process.stderr, discardStdin: false, text }).start();
      };
    }
    let result;
    try {
      result = await verifyAdapter(requiredString(input, 'dir'), options);
    } finally {
      // also when hashing ended early (an error, a file the checksums do not list)
      spinner?.stop();
    }
    const { verified: _verified, ...report } = result;
    // an unreadable file is an environment error (3), whatever else the report says
    const exitCode = reportExitCode(report);
    io.setExitCode(exitCode);
    if (!io.json) {
      const name = report.adapter.id
        ? `${report.adapter.id} ${report.adapter.version ?? ''}`.trim()
        : report.adapter.path;
      io.log(`Verifying ${name} (${report.adapter.path})\n`);
      io.write(renderChecklist(report.checks, report.findings));
      const { errors, warnings } = countFindings(report.findings);
      const w = warnings ? plural(warnings, 'warning') : '';
      // the blank line outside the colour: chalk closes and reopens a colour around each line break
      io.log('');
      const counts = `${plural(errors, 'error')}${w ? `, ${w}` : ''}`;
      io.log(
        report.ok
          ? paint.green(`Adapter is valid${w ? ` (${w})` : ''}.`)
          : exitCode === ExitCode.ENVIRONMENT
            ? paint.red(`Adapter could not be verified: ${counts} (files this user cannot read).`)
            : paint.red(`Adapter is invalid: ${counts}.`),
      );
    }
    return report;
  } finally {
    // not adopted (a base that could not be read): its worker must not keep the process alive
    earlyHash?.hash.cancel();
  }
}
