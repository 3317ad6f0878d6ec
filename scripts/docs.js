#!/usr/bin/env node
// Rewrites the generated parts of the docs (src/docs.ts) from the built code: `npm run docs`.
import { readFileSync, writeFileSync } from 'node:fs';
import { GENERATED, withGeneratedParts } from '../dist/docs.js';

for (const file of new Set(GENERATED.map((p) => p.file))) {
  const url = new URL(`../${file}`, import.meta.url);
  const text = readFileSync(url, 'utf8');
  const next = withGeneratedParts(file, text);
  if (next !== text) writeFileSync(url, next);
  console.log(`${file}: ${next === text ? 'up to date' : 'rewritten'}`);
}
