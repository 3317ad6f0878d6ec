#!/usr/bin/env node
// Entry point: the front door (src/cli/main.ts) reads every command line; oclif is loaded for help only.
import { main } from '../dist/cli/main.js';

await main(process.argv.slice(2), { oclif: () => import('@oclif/core'), bin: import.meta.url });
