#!/usr/bin/env node
// Writes oclif.manifest.json after a build. Without it oclif imports every command module to find
// the one it runs, which is most of the start-up time of a short command. (The `oclif` CLI that
// usually writes it needs Node 22; @oclif/core can build the same manifest.)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Plugin } from '@oclif/core';

const root = fileURLToPath(new URL('../', import.meta.url));
const plugin = new Plugin({
  root,
  type: 'core',
  ignoreManifest: true,
  errorOnManifestCreate: true,
  isRoot: true,
});
await plugin.load();
writeFileSync(
  new URL('../oclif.manifest.json', import.meta.url),
  `${JSON.stringify(plugin.manifest, null, 2)}\n`,
);
console.log(`oclif.manifest.json: ${Object.keys(plugin.manifest.commands).join(', ')}`);
