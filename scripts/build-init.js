#!/usr/bin/env node
// Compiles native/codi-init.c into dist/codi-init: the init (a child subreaper) `codi-adapter run` always
// starts itself under (src/run/init.ts). Needs a C compiler ($CC, else cc); without one the build goes on
// and says so, and `run` falls back to tini on PATH, else warns.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../native/codi-init.c', import.meta.url));
const out = fileURLToPath(new URL('../dist/codi-init', import.meta.url));
const cc = process.env.CC || 'cc';
mkdirSync(fileURLToPath(new URL('../dist/', import.meta.url)), { recursive: true });
try {
  execFileSync(cc, ['-O2', '-Wall', '-o', out, source], { stdio: ['ignore', 'inherit', 'inherit'] });
  console.log('dist/codi-init: built');
} catch (e) {
  const why = e?.code === 'ENOENT' ? `no C compiler (${cc})` : `${cc} failed`;
  console.warn(`dist/codi-init: not built (${why}); run will use tini on PATH`);
}
