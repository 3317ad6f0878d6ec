/** `sign`'s behaviour (its spec and help are in registry.ts). */
import { adoptEarly } from '../checksum.js';
import { paint } from '../paint.js';
import { signAdapter, type SignResult } from '../signing/sign.js';
import { plural } from '../text.js';
import { requiredString, type CommandContext, type CommandInput, type CommandIO } from './spec.js';

export type { SignResult };

/** The environment variable an encrypted key's passphrase is read from (never a flag: it would show in `ps`). */
export const PASSPHRASE_VARIABLE = 'CODI_SIGN_PASSPHRASE';

export async function signMain(
  input: CommandInput,
  io: CommandIO,
  { earlyHash }: Pick<CommandContext, 'earlyHash'> = { earlyHash: null },
): Promise<SignResult> {
  try {
    const passphrase = process.env[PASSPHRASE_VARIABLE];
    const result = await signAdapter(requiredString(input, 'dir'), {
      key: requiredString(input, 'key'),
      ...(passphrase ? { passphrase } : {}),
      ...(earlyHash ? { weightsHash: adoptEarly(earlyHash) } : {}),
    });
    if (!io.json) {
      const name = result.adapter.id
        ? `${result.adapter.id} ${result.adapter.version ?? ''}`.trim()
        : result.adapter.path;
      io.log(
        `${paint.green('✔')} Signed ${name}: ${result.replaced ? 'replaced ' : ''}${result.signature} (${plural(result.files.length, 'file')})`,
      );
      io.log(`  key        ${result.key.fingerprint} (${result.key.curve})`);
      io.log(`  statement  ${result.statement_digest}`);
      io.log(`  subject    ${result.subject.name} ${result.subject.digest}`);
      for (const w of result.warnings) io.log(paint.yellow(`  ⚠ ${w.code}: ${w.message}`));
    }
    return result;
  } finally {
    // not adopted (a key that could not be read): its worker must not keep the process alive
    earlyHash?.hash.cancel();
  }
}
