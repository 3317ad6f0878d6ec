/**
 * End-to-end tests run the built CLI. Rebuild dist/ when any source is newer, so `npx vitest` alone
 * never tests stale code.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

/**
 * The state directory every test and every CLI it starts shares unless it names its own: base model
 * hashes cached by the tests stay out of the machine's /tmp/codi-adapter, and go with the run.
 */
function stateDir(): () => void {
  if (process.env.CODI_STATE_DIR) return () => undefined;
  const dir = mkdtempSync(join(tmpdir(), 'codi-test-state-'));
  process.env.CODI_STATE_DIR = dir;
  return () => {
    rmSync(dir, { recursive: true, force: true });
  };
}

export default function setup(): () => void {
  const teardown = stateDir();
  let built: number;
  try {
    built = statSync(join(REPO, 'dist', 'index.js')).mtimeMs;
  } catch {
    built = 0;
  }
  if (newest(join(REPO, 'src')) > built) {
    execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  }
  return teardown;
}
