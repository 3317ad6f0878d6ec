/**
 * The Kubernetes ConfigMap of `run`'s settings (deploy/kubernetes/configmap.yaml), written from the
 * settings rows and the image's own ENV, so that it always lists every setting there is: `npm run docs`
 * rewrites it and a test fails while it differs. A secret setting is never in it (the Deployment reads
 * those from a Secret).
 */
import { Document, isMap, isScalar } from 'yaml';
import { defaultText, type SettingRow } from './run/settings.js';

export const CONFIG_MAP_NAME = 'codi-settings';
export const SECRET_NAME = 'codi-secrets';
export const CONFIG_MAP_FILE = 'deploy/kubernetes/configmap.yaml';
export const DOCKERFILE = 'docker/Dockerfile.complete';

/**
 * The variables the final stage of a Dockerfile sets with ENV (`KEY=value` pairs, backslash
 * continuations). Quotes and the old `ENV KEY value` form are refused rather than guessed at.
 */
export function imageEnv(dockerfile: string): Record<string, string> {
  const lines = dockerfile.replace(/\\\r?\n/gu, ' ').split(/\r?\n/u);
  let env: Record<string, string> = {};
  for (const line of lines) {
    const [instruction, ...words] = line.trim().split(/\s+/u);
    const word = instruction?.toUpperCase();
    if (word === 'FROM') env = {};
    if (word !== 'ENV') continue;
    for (const w of words) {
      const eq = w.indexOf('=');
      if (eq <= 0 || /["']/u.test(w)) throw new Error(`${DOCKERFILE}: cannot read ENV ${JSON.stringify(w)}`);
      env[w.slice(0, eq)] = w.slice(eq + 1);
    }
  }
  return env;
}

/**
 * Every setting that is not a secret, with the value `run` gets in the image when nothing else sets
 * it: the image's ENV, else the row's default. A default computed from other settings is left empty,
 * which `run` reads as unset, so it is still computed.
 */
export function configMapData(
  rows: readonly SettingRow[],
  image: Readonly<Record<string, string>>,
): Record<string, string> {
  const data: Record<string, string> = {};
  for (const row of rows) {
    if (row.secret === true) continue;
    data[row.name] = image[row.name] ?? (typeof row.default === 'string' ? row.default : '');
  }
  return data;
}

/** configmap.yaml: the ConfigMap, each setting with its description and default as a comment. */
export function configMapYaml(rows: readonly SettingRow[], image: Readonly<Record<string, string>>): string {
  const data = configMapData(rows, image);
  const secrets = rows.filter((r) => r.secret === true).map((r) => r.name);
  const doc = new Document({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: CONFIG_MAP_NAME, labels: { 'app.kubernetes.io/name': 'codi' } },
    data,
  });
  doc.commentBefore = [
    ` Written by \`npm run docs\` from run's settings (src/run/settings.ts) and the image's ENV`,
    ` (${DOCKERFILE}); a test fails while it differs. Change values in an overlay (a patch of`,
    ` ConfigMap/${CONFIG_MAP_NAME}), not here. An empty value is unset: run computes the default.`,
    secrets.length > 0
      ? ` Secrets are not here: ${secrets.join(', ')} come from Secret/${SECRET_NAME} (see README.md).`
      : ` Secret settings, when there are any, come from Secret/${SECRET_NAME} (see README.md).`,
  ].join('\n');
  const map = doc.get('data', true);
  if (isMap(map)) {
    for (const pair of map.items) {
      const row = rows.find((r) => isScalar(pair.key) && r.name === pair.key.value);
      if (!row || !isScalar(pair.key)) continue;
      const from =
        image[row.name] !== undefined ? `run's default: ${defaultText(row)}; this is the image's` : null;
      pair.key.commentBefore = ` ${row.description}${from ? ` (${from})` : typeof row.default === 'string' ? '' : ` (empty: ${defaultText(row)})`}`;
    }
  }
  return doc.toString({ singleQuote: true, lineWidth: 0 });
}
