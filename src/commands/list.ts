import { Flags } from '@oclif/core';
import chalk from 'chalk';
import { BaseCommand } from '../base-command.js';
import { DEFAULT_MODEL_ROOT, listAdapters, type CatalogEntry, type CatalogListing } from '../catalog.js';
import { ExitCode } from '../errors.js';
import { formatBytes, plural } from '../text.js';

export type ListResult = CatalogListing;

export default class List extends BaseCommand {
  static override summary = 'List the adapters in the models volume';
  static override description =
    'Scans <root>/adapters/*: id, version, base model, weights checksum (short), size, status (mounted, invalid with the first finding, or not_mounted when UID 1000 cannot read it), and a * on the active adapter. Without --verify it reads layout, headers and metadata only (fast; the checksum shown is the recorded one); --verify re-hashes every file and exits 1 if any adapter is invalid.';
  static override examples = [
    '<%= config.bin %> list --root /models',
    '<%= config.bin %> list --verify --json',
  ];
  static override flags = {
    root: Flags.string({
      description: 'models volume root',
      env: 'MODEL_MOUNT_PATH',
      default: DEFAULT_MODEL_ROOT,
    }),
    verify: Flags.boolean({ description: 'recompute every checksum (reads all the weights)' }),
  };

  async run(): Promise<ListResult> {
    const { flags } = await this.parse(List);
    const listing = await listAdapters({ root: flags.root, verify: flags.verify });
    if (flags.verify && listing.adapters.some((a) => a.status !== 'mounted'))
      this.setExitCode(ExitCode.INVALID);
    if (!this.jsonEnabled()) this.render(listing);
    return listing;
  }

  private render(listing: CatalogListing): void {
    if (listing.adapters.length === 0) {
      this.log(`No adapters in ${listing.adapters_dir}.`);
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
      this.log(chalk.bold(line(header)));
      for (const r of rows) this.log(line(r));
    }
    if (listing.active_dangling) {
      this.log(
        chalk.yellow(`⚠ active points to ${listing.active ?? '?'}, which is not in ${listing.adapters_dir}`),
      );
    }
    if (listing.leftovers.length > 0) {
      this.log(
        chalk.dim(
          `${listing.leftovers.length} leftover(s) of interrupted mounts; the next mount cleans them`,
        ),
      );
    }
  }
}

function statusText(a: CatalogEntry): string {
  if (a.status === 'mounted')
    return a.warnings > 0 ? `mounted (${plural(a.warnings, 'warning')})` : 'mounted';
  const f = a.finding;
  const text = f ? `${a.status}: ${f.code} ${f.message}` : a.status;
  return a.status === 'invalid' ? chalk.red(text) : chalk.yellow(text);
}
