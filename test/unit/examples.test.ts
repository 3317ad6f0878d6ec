import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { generateExamples } from '../../src/testkit/examples.js';
import { tempDir } from '../helpers/tmp.js';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(root, p));
    }
  };
  await walk(root);
  return out.sort();
}

describe('examples/', () => {
  it('are exactly what the project code generates from its fixed seeds', async () => {
    const dir = await tempDir();
    await generateExamples(dir);
    const generated = await listFiles(dir);
    const committed = (await listFiles(EXAMPLES)).filter(
      (f) => generated.includes(f) || f.startsWith('adapters/') || f.startsWith('base/'),
    );
    expect(committed).toEqual(generated);
    for (const f of generated) {
      const a = await readFile(join(dir, f));
      const b = await readFile(join(EXAMPLES, f));
      expect(a.equals(b), `${f} differs from a fresh generation: run npm run examples`).toBe(true);
    }
  });
});
