#!/usr/bin/env node
// Rewrites the generated parts of the docs and the generated files (src/docs.ts) from the built
// code: `npm run docs`.
import { readFileSync, writeFileSync } from 'node:fs';
import { GENERATED, GENERATED_FILES, withGeneratedParts } from '../dist/docs.js';

const url = (file) => new URL(`../${file}`, import.meta.url);
const read = (file) => readFileSync(url(file), 'utf8');
const report = (file, changed) => console.log(`${file}: ${changed ? 'rewritten' : 'up to date'}`);

for (const file of new Set(GENERATED.map((p) => p.file))) {
  const text = read(file);
  const next = withGeneratedParts(file, text);
  if (next !== text) writeFileSync(url(file), next);
  report(file, next !== text);
}
for (const { file, render } of GENERATED_FILES) {
  let text = null;
  try {
    text = read(file);
  } catch {
    // a new generated file
  }
  const next = render(read);
  if (next !== text) writeFileSync(url(file), next);
  report(file, next !== text);
}
