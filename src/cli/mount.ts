/** `mount`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { mountAdapter, type MountResult } from '../catalog/mount.js';
import { statusOf } from '../catalog/volume.js';
import { isCodiError } from '../errors.js';
import { readRevocations } from '../revocations.js';
import { loadTrustedKeys } from '../signing/keys.js';
import { renderFinding } from '../render.js';
import {
  booleanFlag,
  integerFlag,
  requiredString,
  stringFlag,
  type CommandInput,
  type CommandIO,
} from './spec.js';

export type { MountResult };

export async function mountMain(input: CommandInput, io: CommandIO): Promise<MountResult> {
  const id = stringFlag(input, 'id');
  const base = stringFlag(input, 'base');
  let result: MountResult;
  try {
    const trust = stringFlag(input, 'trust');
    const rules = stringFlag(input, 'rules');
    result = await mountAdapter(requiredString(input, 'source'), {
      ...(trust === undefined ? {} : { trust: await loadTrustedKeys(trust) }),
      ...(rules === undefined ? {} : { revocations: await readRevocations(rules) }),
      root: requiredString(input, 'root'),
      activate: booleanFlag(input, 'activate'),
      force: booleanFlag(input, 'force'),
      toSafetensors: booleanFlag(input, 'to-safetensors'),
      lockTimeoutMs: integerFlag(input, 'lock-timeout') * 1000,
      ...(id === undefined ? {} : { id }),
      ...(base === undefined ? {} : { base }),
    });
  } catch (e) {
    // the status line comes first, the error and its hint follow on stderr (finish.ts)
    if (isCodiError(e) && !io.json) {
      io.log(`Adapter Status: ${statusOf(e)} (${e.code}: ${e.message})`);
    }
    throw e;
  }
  if (!io.json) {
    const verb = {
      registered: 'Registered',
      installed: 'Installed',
      replaced: 'Replaced',
      unchanged: 'Already mounted',
    }[result.action];
    io.log(`${paint.green('✔')} ${verb} ${result.adapter.id} ${result.adapter.version} → ${result.path}`);
    io.log(`  ${result.adapter.checksum}, base ${result.adapter.base_model}`);
    if (result.converted) {
      io.log(
        `  ${result.converted.file} converted from ${result.converted.from.file} (sha256:${result.converted.from.sha256})`,
      );
    }
    if (result.signed_by) io.log(`  signed by ${result.signed_by}`);
    if (result.activated) io.log(`  active → ${result.id}`);
    else if (result.active) io.log('  active (unchanged)');
    if (result.base) {
      const what = result.base.recorded
        ? result.base.replaced
          ? `recorded in metadata.json (it was ${result.base.replaced})`
          : 'recorded in metadata.json'
        : 'as metadata.json records it';
      io.log(`  base ${result.base.name ?? result.base.file ?? ''} sha256 ${result.base.sha256}: ${what}`);
    }
    if (result.gguf) io.log(`  GGUF ${result.gguf.cached ? '(cached)' : 'built'}: ${result.gguf.path}`);
    for (const id of result.cleaned.restored) io.log(`  restored ${id} from an interrupted replacement`);
    if (result.cleaned.removed.length > 0) {
      io.log(`  cleaned ${result.cleaned.removed.length} leftover(s) of interrupted mounts`);
    }
    for (const f of result.findings) io.log(renderFinding(f));
    io.log(`Adapter Status: mounted (${result.reason})`);
  }
  return result;
}
