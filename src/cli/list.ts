/** `list`'s behaviour (its spec and help are in registry.ts). */
import { paint } from '../paint.js';
import { listAdapters, type CatalogEntry, type CatalogListing } from '../catalog/list.js';
import { ExitCode } from '../errors.js';
import { formatBytes, plural } from '../text.js';
import { booleanFlag, requiredString, stringFlag, type CommandInput, type CommandIO } from './spec.js';

export type ListResult = CatalogListing;

export async function listMain(input: CommandInput, io: CommandIO): Promise<ListResult> {
  const verify = booleanFlag(input, 'verify');
  const rules = stringFlag(input, 'rules');
  const listing = await listAdapters({
    root: requiredString(input, 'root'),
    verify,
    // the rules file's YAML parser is loaded only for --rules
    ...(rules === undefined
      ? {}
      : { revocations: await (await import('../revocations.js')).readRevocations(rules) }),
  });
  if (verify && listing.adapters.some((a) => a.status !== 'mounted')) io.setExitCode(ExitCode.INVALID);
  if (!io.json) renderListing(listing, io);
  return listing;
}

function renderListing(listing: CatalogListing, io: CommandIO): void {
  if (listing.adapters.length === 0) {
    io.log(`No adapters in ${listing.adapters_dir}.`);
  } else {
    const rows = listing.adapters.map((a) => [
      a.active ? '*' : ' ',
      a.id,
      a.version ?? '-',
      a.base_model ?? '-',
      a.checksum ? a.checksum.slice('sha256:'.length, 'sha256:'.length + 12) : '-',
      formatBytes(a.size),
      statusText(a),
    ]);
    const header = [
      ' ',
      'ID',
      'VERSION',
      'BASE MODEL',
      listing.verified ? 'SHA256 ✔' : 'SHA256',
      'SIZE',
      'STATUS',
    ];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    const line = (cells: string[]): string =>
      cells
        .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd();
    io.log(paint.bold(line(header)));
    for (const r of rows) io.log(line(r));
  }
  if (listing.active_dangling) {
    io.log(
      paint.yellow(`⚠ active points to ${listing.active ?? '?'}, which is not in ${listing.adapters_dir}`),
    );
  }
  if (listing.root_warning) {
    io.log(paint.yellow(`⚠ ${listing.root_warning.code}: ${listing.root_warning.message}`));
    if (listing.root_warning.hint) io.log(`  ${paint.dim('hint:')} ${listing.root_warning.hint}`);
  }
  if (listing.leftovers.length > 0) {
    io.log(
      paint.dim(`${listing.leftovers.length} leftover(s) of interrupted mounts; the next mount cleans them`),
    );
  }
  if (listing.in_progress.length > 0) {
    io.log(paint.dim(`${plural(listing.in_progress.length, 'mount')} in progress`));
  }
}

function statusText(a: CatalogEntry): string {
  if (a.status === 'mounted') {
    if (a.warnings === 0) return 'mounted';
    const first = a.warning ? `: ${a.warning.code}${a.warnings > 1 ? ', …' : ''}` : '';
    return `mounted (${plural(a.warnings, 'warning')}${first})`;
  }
  if (a.revoked) return paint.red(`revoked since ${a.revoked.revoked_at}: ${a.revoked.reason}`);
  const f = a.finding;
  const text = f ? `${a.status}: ${f.code} ${f.message}` : a.status;
  return a.status === 'invalid' ? paint.red(text) : paint.yellow(text);
}
