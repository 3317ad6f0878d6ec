/**
 * Signed adapters and revocation through the built CLI, as a release pipeline and an operator use
 * them: sign, verify --trust, mount --trust, promote --trust, revoke, list --rules.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { copyFile, mkdir, readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { CatalogListing } from '../../src/catalog/list.js';
import type { MountResult } from '../../src/catalog/mount.js';
import type { PromoteResult } from '../../src/promote.js';
import type { RevokeResult } from '../../src/revoke.js';
import { parseRules } from '../../src/rules.js';
import type { SignResult } from '../../src/signing/sign.js';
import type { VerifyReport } from '../../src/verify.js';
import { makeAdapter, makeVolume, openTempDir } from '../helpers/catalog.js';
import { runCli, type CliResult } from '../helpers/cli.js';

interface ErrorJson {
  ok: false;
  error: { code: string; message: string; exitCode: number; hint?: string };
}

const WEIGHTS = 'sha256:601dd4a90ee933effd9995bd15bebf30e9ad00f9813684caad8d34faa300a8ce';

let dir: string;
let key: string;
let trusted: string;
let fingerprint: string;

beforeAll(async () => {
  dir = await openTempDir('codi-sign-e2e-');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  key = join(dir, 'release.key');
  await writeFile(key, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  trusted = join(dir, 'trusted');
  await mkdir(trusted);
  const pem = publicKey.export({ type: 'spki', format: 'pem' });
  await writeFile(join(trusted, 'release.pem'), pem);
  fingerprint = `sha256:${createHash('sha256').update(pem).digest('hex')}`;
});

let n = 0;
async function signed(): Promise<string> {
  const adapter = await makeAdapter(join(dir, `s${++n}`), 'tiny-qwen2-lora');
  const r = await runCli(['sign', adapter, '--key', key]);
  expect(r.code, r.stderr).toBe(0);
  return adapter;
}

/** An error as --json gives it, and the same failure without --json: no stack trace either way. */
function failedWith(r: CliResult, code: string, exit: number): ErrorJson['error'] {
  expect([r.code, r.stderr]).not.toContainEqual(expect.stringMatching(/\n\s+at /u));
  expect(r.code, r.stderr).toBe(exit);
  const j = r.json as ErrorJson;
  expect(j.error.code).toBe(code);
  return j.error;
}

describe('sign and verify --trust', () => {
  it('sign --json prints the statement digest and the key fingerprint; verify --trust passes', async () => {
    const adapter = await makeAdapter(join(dir, 'json'), 'tiny-qwen2-lora');
    const r = await runCli(['sign', adapter, '--key', key, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json as SignResult;
    const bundle = JSON.parse(await readFile(join(adapter, 'model.sig'), 'utf8')) as {
      dsseEnvelope: { payload: string };
    };
    const payload = Buffer.from(bundle.dsseEnvelope.payload, 'base64');
    expect(j).toMatchObject({
      signature: join(adapter, 'model.sig'),
      key: { fingerprint, curve: 'P-256' },
      statement_digest: `sha256:${createHash('sha256').update(payload).digest('hex')}`,
      subject: { name: 'tiny-qwen2-lora' },
      replaced: false,
    });
    const human = await runCli(['verify', adapter, '--trust', join(trusted, 'release.pem')]);
    expect(human.code, human.stdout).toBe(0);
    expect(human.stdout).toMatch(
      /✔ signature\s+signed by sha256:[0-9a-f]{12}… \(P-256\), 4 files as signed/u,
    );
    const folder = await runCli(['verify', adapter, '--trust', trusted, '--json']);
    expect((folder.json as VerifyReport).signature).toMatchObject({ ok: true, signer: { fingerprint } });
    // CODI_TRUST_KEYS is the default of --trust
    const env = await runCli(['verify', adapter, '--json'], { env: { CODI_TRUST_KEYS: trusted } });
    expect((env.json as VerifyReport).signature?.checked).toBe(true);
  });

  it('verify --trust fails (exit 1) an unsigned, a tampered and an oversized-signature adapter, each with its code', async () => {
    const unsigned = await makeAdapter(join(dir, 'unsigned'), 'tiny-qwen2-lora');
    const tampered = await signed();
    await writeFile(join(tampered, 'notes.txt'), 'added after signing');
    const huge = await signed();
    await truncate(join(huge, 'model.sig'), 100 * 1024 * 1024);
    const runs = await Promise.all(
      [unsigned, tampered, huge].map((a) => runCli(['verify', a, '--trust', trusted, '--json'])),
    );
    expect(runs.map((r) => r.code)).toEqual([1, 1, 1]);
    expect(
      runs.map((r) =>
        (r.json as VerifyReport).findings.filter((f) => f.level === 'error').map((f) => f.code),
      ),
    ).toEqual([['SIGNATURE_MISSING'], ['SIGNATURE_FILES_DIFFER'], ['SIGNATURE_TOO_LARGE']]);
    const human = await runCli(['verify', tampered, '--trust', trusted]);
    expect(human.stdout).toMatch(/✖ signature/u);
    expect(human.stdout).toMatch(
      /SIGNATURE_FILES_DIFFER \[notes\.txt\] notes\.txt is not in the signed files/u,
    );
    expect(human.stdout).not.toMatch(/\n\s+at /u);
  });

  it('bad keys and bad input: clear codes, the right exit status, no stack trace, no model.sig', async () => {
    const adapter = await makeAdapter(join(dir, 'bad'), 'tiny-qwen2-lora');
    const rsa = join(dir, 'rsa.pem');
    await writeFile(
      rsa,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
    );
    failedWith(await runCli(['sign', adapter, '--key', rsa, '--json']), 'KEY_UNSUPPORTED', 1);
    failedWith(
      await runCli(['sign', adapter, '--key', join(dir, 'missing.pem'), '--json']),
      'PATH_MISSING',
      3,
    );
    failedWith(await runCli(['sign', adapter, '--json']), 'USAGE', 2);
    failedWith(
      await runCli(['verify', adapter, '--trust', join(dir, 'missing'), '--json']),
      'PATH_MISSING',
      3,
    );
    failedWith(await runCli(['verify', adapter, '--trust', key, '--json']), 'KEY_INVALID', 1);
    const human = await runCli(['sign', adapter, '--key', rsa]);
    expect(human.stderr).toMatch(
      /✖ KEY_UNSUPPORTED: .*rsa\.pem holds an RSA key; model signing takes EC keys on P-256, P-384 or P-521/u,
    );
    expect(human.stderr).toMatch(/hint: use an EC key/u);
    // an adapter verify fails is not signed
    await writeFile(join(adapter, 'adapter_config.json'), '{');
    failedWith(await runCli(['sign', adapter, '--key', key, '--json']), 'CONFIG_JSON', 1);
    expect(await readdir(adapter)).not.toContain('model.sig');
  });
});

describe('mount --trust and --rules', () => {
  it('installs a signed adapter with its model.sig and the signer; refuses an unsigned one (invalid, exit 1)', async () => {
    const { root } = await makeVolume();
    const adapter = await signed();
    const ok = await runCli(['mount', adapter, '--root', root, '--trust', trusted, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.json as MountResult).toMatchObject({ action: 'installed', signed_by: fingerprint });
    expect(await readdir(join(root, 'adapters/tiny-qwen2-lora'))).toContain('model.sig');
    const unsigned = await makeAdapter(join(dir, 'm-unsigned'), 'other-adapter');
    const refused = await runCli(['mount', unsigned, '--root', root], { env: { CODI_TRUST_KEYS: trusted } });
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(/^Adapter Status: invalid \(SIGNATURE_MISSING: /mu);
    expect(await readdir(join(root, 'adapters'))).not.toContain('other-adapter');
  });

  it('refuses a revoked adapter (ADAPTER_REVOKED, exit 1), and list --rules shows it revoked', async () => {
    const { root } = await makeVolume();
    const rules = join(dir, 'mount-rules.yml');
    await writeFile(
      rules,
      `version: "1"\nllm_assist:\n  revoked:\n    tiny-qwen2-lora:\n      checksum: "${WEIGHTS}"\n      reason: leaked\n      revoked_at: "2026-12-01T00:00:00Z"\n`,
    );
    const adapter = await makeAdapter(join(dir, 'm-revoked'), 'tiny-qwen2-lora');
    const r = await runCli(['mount', adapter, '--root', root, '--rules', rules]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^Adapter Status: invalid \(ADAPTER_REVOKED: tiny-qwen2-lora 0\.1\.0 \(sha256:601dd4a9/mu,
    );
    // mounted before the revocation: list shows it revoked, and --verify fails
    expect((await runCli(['mount', adapter, '--root', root])).code).toBe(0);
    const listed = await runCli(['list', '--root', root, '--rules', rules, '--json']);
    expect((listed.json as CatalogListing).adapters[0]).toMatchObject({
      id: 'tiny-qwen2-lora',
      status: 'revoked',
      revoked: { reason: 'leaked', revoked_at: '2026-12-01T00:00:00Z' },
    });
    const human = await runCli(['list', '--root', root, '--rules', rules]);
    expect(human.stdout).toMatch(/revoked since 2026-12-01T00:00:00Z: leaked/u);
    expect((await runCli(['list', '--root', root, '--rules', rules, '--verify'])).code).toBe(1);
    expect((await runCli(['list', '--root', root])).stdout).toMatch(/mounted/u);
  });
});

describe('promote --trust and revoke', () => {
  it('promote --trust records signed_by and leaves the signed metadata.json as it is', async () => {
    const adapter = await signed();
    const rules = join(dir, 'rules-promote.yml');
    await copyFile('examples/patterns/rules.yml', rules);
    const metadata = await readFile(join(adapter, 'metadata.json'), 'utf8');
    const r = await runCli([
      'promote',
      adapter,
      '--rules',
      rules,
      '--eval',
      'examples/eval.json',
      '--trust',
      trusted,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json as PromoteResult).toMatchObject({
      promoted: true,
      signed_by: fingerprint,
      metadata_kept: true,
    });
    expect(
      parseRules(await readFile(rules, 'utf8')).llmAssist?.adapters?.['tiny-qwen2-lora']?.signed_by,
    ).toBe(fingerprint);
    expect(await readFile(join(adapter, 'metadata.json'), 'utf8')).toBe(metadata);
    // so the signature still holds
    expect((await runCli(['verify', adapter, '--trust', trusted])).code).toBe(0);
    const unsigned = await makeAdapter(join(dir, 'p-unsigned'), 'tiny-qwen2-lora', { version: '0.2.0' });
    failedWith(
      await runCli(['promote', unsigned, '--rules', rules, '--trust', trusted, '--json']),
      'SIGNATURE_MISSING',
      1,
    );
  });

  it('revoke records the promoted checksum keeping every other byte; run-time refusals follow from it', async () => {
    const adapter = await makeAdapter(join(dir, 'r'), 'tiny-qwen2-lora');
    const rules = join(dir, 'rules-revoke.yml');
    await copyFile('examples/patterns/rules.yml', rules);
    expect((await runCli(['promote', adapter, '--rules', rules, '--eval', 'examples/eval.json'])).code).toBe(
      0,
    );
    const before = await readFile(rules, 'utf8');
    const dry = await runCli([
      'revoke',
      'tiny-qwen2-lora',
      '--rules',
      rules,
      '--reason',
      'leaks data',
      '--dry-run',
    ]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('+  revoked:');
    expect(await readFile(rules, 'utf8')).toBe(before);
    const r = await runCli([
      'revoke',
      'tiny-qwen2-lora',
      '--rules',
      rules,
      '--reason',
      'leaks data',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json as RevokeResult).toMatchObject({
      revoked: true,
      already: false,
      is_default: true,
      revocation: { checksum: WEIGHTS, reason: 'leaks data' },
    });
    const after = await readFile(rules, 'utf8');
    expect(after.startsWith(before.trimEnd())).toBe(true);
    expect(after).toMatch(
      /\n {2}revoked:\n {4}tiny-qwen2-lora:\n {6}checksum: sha256:601dd4a9[0-9a-f]+\n {6}reason: leaks data\n {6}revoked_at: "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\n$/u,
    );
    const again = await runCli([
      'revoke',
      'tiny-qwen2-lora',
      '--rules',
      rules,
      '--reason',
      'again',
      '--json',
    ]);
    expect([again.code, (again.json as RevokeResult).already]).toEqual([0, true]);
    expect(await readFile(rules, 'utf8')).toBe(after);
    // promote refuses it now
    failedWith(await runCli(['promote', adapter, '--rules', rules, '--json']), 'ADAPTER_REVOKED', 1);
    // another version of the id: the revocation becomes a list of both
    const other = `sha256:${'b'.repeat(64)}`;
    expect(
      (
        await runCli([
          'revoke',
          'tiny-qwen2-lora',
          '--rules',
          rules,
          '--reason',
          'bad build',
          '--checksum',
          other,
        ])
      ).code,
    ).toBe(0);
    const revoked = parseRules(await readFile(rules, 'utf8')).llmAssist?.revoked?.['tiny-qwen2-lora'];
    expect(Array.isArray(revoked) ? revoked.map((x) => x.checksum) : revoked).toEqual([WEIGHTS, other]);
    failedWith(
      await runCli(['revoke', 'never-promoted', '--rules', rules, '--reason', 'x', '--json']),
      'REVOKE_CHECKSUM_UNKNOWN',
      2,
    );
    failedWith(
      await runCli(['revoke', 'Bad..Id', '--rules', rules, '--reason', 'x', '--json']),
      'MOUNT_ID_INVALID',
      2,
    );
    failedWith(
      await runCli(['revoke', 'x', '--rules', rules, '--reason', 'x', '--checksum', 'abc', '--json']),
      'USAGE',
      2,
    );
  });
});
