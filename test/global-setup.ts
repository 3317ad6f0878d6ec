/**
 * End-to-end tests run the built CLI. Rebuild dist/ when any source is newer, so `npx vitest` alone
 * never tests stale code.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../', import.meta.url));

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

export default function setup(): void {
  let built: number;
  try {
    built = statSync(join(REPO, 'dist', 'index.js')).mtimeMs;
  } catch {
    built = 0;
  }
  if (newest(join(REPO, 'src')) > built) {
    execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  }
}
