#!/usr/bin/env node
// The demo app `codi-adapter run` starts in the README demo (scripts/demo.sh). It asks the gateway at
// LLM_ENDPOINT the same question twice: with no `model` (the default adapter, at scale 1) and with
// `model` = the base id CODE_MODEL (every adapter at scale 0: the base alone), prints both answers and
// exits 0, which ends `run`.
// The bundled base model is tiny and random, so the answers are noise; what matters is that they differ.
import { Buffer } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';

const endpoint = process.env.LLM_ENDPOINT;
const prompt = process.env.DEMO_PROMPT ?? 'def fibonacci(n):';
if (!endpoint) {
  console.error('ask.js: LLM_ENDPOINT is not set (run me through codi-adapter run)');
  process.exit(2);
}

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
    const req = request(`${endpoint}${path}`, { method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

// greedy and uncached, so the two answers differ only by the adapter
const ask = async (model) =>
  (
    await call('POST', '/completion', {
      ...(model === undefined ? {} : { model }),
      prompt,
      n_predict: 24,
      temperature: 0,
      cache_prompt: false,
      seed: 1,
    })
  ).content;

const environment = process.env.CODI_ENVIRONMENT_FILE
  ? JSON.parse(readFileSync(process.env.CODI_ENVIRONMENT_FILE, 'utf8'))
  : null;
const base = process.env.CODE_MODEL ?? environment?.base_model?.id;
if (!base) {
  console.error('ask.js: CODE_MODEL is not set and environment.json does not name the base');
  process.exit(2);
}
const models = (await call('GET', '/v1/models')).data;
const served = models.map((m) => (m.parent === null ? `${m.id} (base)` : `${m.id} ${m.version ?? ''}${m.default ? ' (default)' : ''}`));
console.log(`models served: ${served.join(', ')}`);
const withAdapter = await ask();
const withoutAdapter = await ask(base);

console.log(`question:          ${JSON.stringify(prompt)}`);
console.log(`adapter at scale 1: ${JSON.stringify(withAdapter)}`);
console.log(`adapter at scale 0: ${JSON.stringify(withoutAdapter)}`);
console.log(withAdapter === withoutAdapter ? 'the answers are the same (unexpected)' : 'the adapter changes the answer');
