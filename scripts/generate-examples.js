#!/usr/bin/env node
// Regenerates examples/ from project code (fixed seeds). Needs `npm run build` first.
import { fileURLToPath } from 'node:url';
import { generateExamples } from '../dist/testkit/examples.js';

const root = fileURLToPath(new URL('../examples/', import.meta.url));
await generateExamples(root);
console.log(`examples written to ${root}`);
