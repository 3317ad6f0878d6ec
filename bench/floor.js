#!/usr/bin/env node
// The floor of what `convert` must do with a weights file, as plain Node with nothing else: read it in
// 1 MiB blocks, sha256 every byte, write it to a temp file, fdatasync, rename over the target. No
// parsing, no checks, no conversion. bench/convert.js times it beside `cp` (which neither hashes nor
// syncs) so the gap between the two references is visible.
// Usage: node bench/floor.js <source> <target>
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { closeSync, fdatasyncSync, openSync, readSync, renameSync, writeSync } from 'node:fs';

const [source, target] = process.argv.slice(2);
const hash = createHash('sha256');
const input = openSync(source, 'r');
const temp = `${target}.floor.tmp`;
const output = openSync(temp, 'w');
const block = Buffer.allocUnsafe(1 << 20);
for (let at = 0, n; (n = readSync(input, block, 0, block.length, at)) > 0; at += n) {
  hash.update(block.subarray(0, n));
  writeSync(output, block, 0, n);
}
fdatasyncSync(output);
closeSync(output);
renameSync(temp, target);
closeSync(input);
hash.digest('hex');
