#!/usr/bin/env node
// Compiles schemas/*.schema.json into standalone ajv validators (dist/schemas.validators.cjs) at
// build time: compiling them at run time costs ~100 ms on every command. src/schemas.ts loads the
// compiled validators when present and falls back to compiling (tests run from source).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import standaloneCode from 'ajv/dist/standalone/index.js';
import addFormatsModule from 'ajv-formats';
import { _ } from 'ajv';

const addFormats = addFormatsModule.default ?? addFormatsModule;
const dir = new URL('../schemas/', import.meta.url);
const ajv = new Ajv2020({
  allErrors: true,
  strict: true,
  allowUnionTypes: true,
  verbose: true,
  code: { source: true, formats: _`require("ajv-formats/dist/formats").fullFormats` },
});
addFormats(ajv);
const names = readdirSync(dir)
  .filter((f) => f.endsWith('.schema.json'))
  .map((f) => f.slice(0, -'.schema.json'.length));
const exportsMap = {};
for (const name of names) {
  const schema = JSON.parse(readFileSync(new URL(`${name}.schema.json`, dir), 'utf8'));
  ajv.addSchema(schema, `${name}.schema.json`);
  exportsMap[name] = `${name}.schema.json`;
}
const code = (standaloneCode.default ?? standaloneCode)(ajv, exportsMap);
writeFileSync(new URL('../dist/schemas.validators.cjs', import.meta.url), code);
console.log(`dist/schemas.validators.cjs: ${names.join(', ')}`);
