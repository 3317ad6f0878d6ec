/**
 * CATALOG_POLL_INTERVAL: a look at the rules file and the catalog every interval; a change (the rules
 * file, the `active` link, an adapter folder or its metadata.json added, removed or rewritten) asks
 * for a reload, as SIGHUP does. Only times and sizes are compared: a look costs a few `stat`s.
 */
import { readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ACTIVE_LINK, ADAPTERS_DIR } from '../catalog/volume.js';
import type { RunConfig } from '../run/config.js';

export class CatalogWatch {
  private timer: NodeJS.Timeout | undefined;
  private last: string | null = null;
  private stopped = false;

  constructor(
    private readonly config: RunConfig,
    private readonly intervalMs: number,
    private readonly onChange: () => void,
  ) {
    void this.look();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async look(): Promise<void> {
    const now = await catalogFingerprint(this.config);
    if (this.stopped) return;
    if (this.last !== null && now !== this.last) this.onChange();
    this.last = now;
    this.timer = setTimeout(() => void this.look(), this.intervalMs);
    this.timer.unref();
  }
}

export async function catalogFingerprint(config: RunConfig): Promise<string> {
  const parts: string[] = [];
  const add = async (path: string): Promise<void> => {
    const st = await stat(path).catch(() => null);
    parts.push(st ? `${path}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}` : `${path}:-`);
  };
  await add(config.patternsRules);
  const dir = join(config.modelMountPath, ADAPTERS_DIR);
  parts.push(`active:${await readlink(join(dir, ACTIVE_LINK)).catch(() => '-')}`);
  for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
    if (name.startsWith('.') || name === ACTIVE_LINK) continue;
    await add(join(dir, name));
    await add(join(dir, name, 'metadata.json'));
  }
  return parts.join('\n');
}
