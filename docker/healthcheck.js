#!/usr/bin/env node
// The image's HEALTHCHECK. Healthy means: `codi-adapter run` finished starting (it writes
// environment.json only after the LLM answered GET /health 200 and listed the adapter, and deletes a
// stale one at start), the LLM answers GET /health 200 now, and the app answers APP_HEALTH_URL with 2xx
// when one is configured. Plain node:http, no oclif: it runs every 30 s. environment.json records URLs
// with their credentials and tokens redacted; the variable run was given supplies them (when it is the
// URL that was recorded). The URLs were held to the air gap's rule by run before it wrote the file.
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { request as requestTls } from 'node:https';
import { join } from 'node:path';
import { REDACTED, redactUrl } from '../dist/redact.js';

const file = join(process.env.CODI_STATE_DIR || '/tmp/codi-adapter', 'environment.json');

function get(url) {
  return new Promise((resolve) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? requestTls : request)(
      u,
      { agent: false, timeout: 5000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve(e.code ?? e.message));
    req.end();
  });
}

let env;
try {
  env = JSON.parse(readFileSync(file, 'utf8'));
} catch {
  console.log(`starting: ${file} not written yet`);
  process.exit(1);
}
/** The recorded URL, with what was redacted from it restored from the variable that gave it. */
function usable(recorded, variable) {
  const given = process.env[variable];
  if (!recorded.includes(REDACTED) || !given) return recorded;
  const base = given.replace(/\/+$/u, '');
  return redactUrl(base) === recorded ? base : redactUrl(given) === recorded ? given : recorded;
}

const problems = [];
if (env.llm?.enabled && env.llm.endpoint) {
  const status = await get(`${usable(env.llm.endpoint, 'LLM_ENDPOINT')}/health`);
  if (status !== 200) problems.push(`LLM ${env.llm.endpoint}/health: ${status}`);
}
const appUrl = env.settings?.APP_HEALTH_URL;
if (env.app?.command && appUrl && appUrl !== 'none') {
  const status = await get(usable(appUrl, 'APP_HEALTH_URL'));
  if (typeof status !== 'number' || status < 200 || status >= 300) problems.push(`app ${appUrl}: ${status}`);
}
if (problems.length > 0) {
  console.log(`unhealthy: ${problems.join('; ')}`);
  process.exit(1);
}
console.log(`healthy: adapter ${env.adapter?.id ?? '-'} ${env.adapter?.version ?? ''}, LLM ${env.llm?.mode}`);
