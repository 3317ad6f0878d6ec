/** `promote`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { promoteAdapter, type PromoteResult } from '../promote.js';
import { renderFinding } from '../render.js';
import { loadTrustedKeys } from '../signing/keys.js';
import {
  booleanFlag,
  integerFlag,
  requiredString,
  stringFlag,
  type CommandInput,
  type CommandIO,
} from './spec.js';

export type { PromoteResult };

export async function promoteMain(input: CommandInput, io: CommandIO): Promise<PromoteResult> {
  const rules = requiredString(input, 'rules');
  const evalFile = stringFlag(input, 'eval');
  const base = stringFlag(input, 'base');
  const trust = stringFlag(input, 'trust');
  const result = await promoteAdapter(requiredString(input, 'dir'), {
    ...(trust === undefined ? {} : { trust: await loadTrustedKeys(trust) }),
    rules,
    dryRun: booleanFlag(input, 'dry-run'),
    setDefault: booleanFlag(input, 'default'),
    force: booleanFlag(input, 'force'),
    lockTimeoutMs: integerFlag(input, 'lock-timeout') * 1000,
    ...(evalFile === undefined ? {} : { eval: evalFile }),
    ...(base === undefined ? {} : { base }),
    onLockWait: (owner) => {
      io.note(`waiting for ${rules}.lock${owner ? ` (pid ${owner.pid} on ${owner.hostname})` : ''}…\n`);
    },
  });
  if (!io.json) renderPromotion(result, io);
  return result;
}

function renderPromotion(r: PromoteResult, io: CommandIO): void {
  const name = `${r.adapter.id} ${r.adapter.version}`;
  for (const f of r.warnings) io.log(renderFinding(f));
  for (const g of r.gates) {
    io.log(`${paint.green('✔')} gate ${g.metric} ${String(g.value)} ≥ ${g.threshold}`);
  }
  if (r.dry_run) {
    if (r.diff) io.write(r.diff);
    io.log(
      r.already
        ? `${name} is already promoted in ${r.rules_file}; nothing would change.`
        : paint.dim(
            `dry run: nothing was written (${[r.changed.rules ? 'rules' : '', r.changed.metadata ? 'metadata.json' : ''].filter(Boolean).join(' and ')} would change)`,
          ),
    );
    return;
  }
  if (r.already) {
    io.log(`${paint.green('✔')} ${name} is already promoted in ${r.rules_file}; nothing changed.`);
    return;
  }
  io.log(`${paint.green('✔')} Promoted ${name} into ${r.rules_file} (ruleset ${r.ruleset_version})`);
  io.log(
    `  ${r.adapter.checksum}, base ${r.adapter.base_model}, default adapter: ${r.default_adapter ?? '-'}`,
  );
  if (r.base) io.log(`  base model ${r.base.name ?? ''} sha256 ${r.base.sha256}`);
  if (r.evaluation) {
    const metrics = Object.entries(r.evaluation.metrics)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    io.log(`  evaluation ${r.evaluation.suite}: ${metrics}`);
  }
  if (r.signed_by) io.log(`  signed by ${r.signed_by}`);
  if (r.changed.metadata) io.log('  metadata.json updated');
  if (r.metadata_kept) {
    io.log('  metadata.json: left as it is (the adapter is signed; the evaluation is in the rules file)');
  }
}
