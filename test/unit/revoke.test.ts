/** Revocations in patterns/rules.yml, and what promote records of a signer. */
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { promoteAdapter } from '../../src/promote.js';
import { readRevocations } from '../../src/revocations.js';
import { revokeAdapter } from '../../src/revoke.js';
import { parseRules, recordRevocation, revocationOf } from '../../src/rules.js';
import { loadTrustedKeys } from '../../src/signing/keys.js';
import { signAdapter } from '../../src/signing/sign.js';
import { makeAdapter, openTempDir } from '../helpers/catalog.js';
import { rejected } from '../helpers/errors.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;

const RULES = `# hand-written rules
version: "2026.11.0" # the ruleset
rules: [ { id: x, pattern: 'a  b' } ]   # odd spacing stays

llm_assist:
  default_adapter: qwen
  adapters: { qwen: { version: 0.1.0, base_model: m, checksum: "${A}" } }
  # revoked adapters go below
`;

describe('recordRevocation', () => {
  it('adds llm_assist.revoked.<id> keeping every other byte; a second version makes a list; the same one changes nothing', () => {
    const first = recordRevocation(parseRules(RULES), 'qwen', {
      checksum: A,
      reason: 'leaks',
      revoked_at: '2026-12-01T00:00:00Z',
    });
    expect(first.changed).toBe(true);
    // the new lines go in after the section's last key; every byte of the file is still there
    const added = `  revoked:\n    qwen:\n      checksum: ${A}\n      reason: leaks\n      revoked_at: "2026-12-01T00:00:00Z"\n`;
    expect(first.text.replace(added, '')).toBe(RULES);
    const same = recordRevocation(parseRules(first.text), 'qwen', {
      checksum: A,
      reason: 'other words',
      revoked_at: '2026-12-02T00:00:00Z',
    });
    expect(same).toEqual({ text: first.text, changed: false });
    const second = recordRevocation(parseRules(first.text), 'qwen', {
      checksum: B,
      reason: 'bad build',
      revoked_at: '2026-12-03T00:00:00Z',
    });
    const rules = parseRules(second.text);
    expect(second.text).toContain(RULES.slice(0, RULES.indexOf('  # revoked')));
    expect([revocationOf(rules, 'qwen', A)?.reason, revocationOf(rules, 'qwen', B)?.reason]).toEqual([
      'leaks',
      'bad build',
    ]);
    expect(revocationOf(rules, 'other', A)).toBeNull();
  });

  it('refuses a revoked section that breaks its schema (a typo, a missing reason)', () => {
    for (const section of [
      `  revoked: { qwen: { checksum: "${A}", reason: x, revoked_at: "2026-12-01T00:00:00Z", reson: y } }\n`,
      `  revoked: { qwen: { checksum: "${A}", revoked_at: "2026-12-01T00:00:00Z" } }\n`,
      `  revoked: { qwen: [] }\n`,
    ]) {
      expect(() => parseRules(RULES + section)).toThrow(/llm_assist\/revoked|llm_assist/u);
    }
  });
});

describe('revoke, and the revocations mount, list and run read', () => {
  it('takes the promoted checksum, or --checksum; none known is REVOKE_CHECKSUM_UNKNOWN (exit 2)', async () => {
    const dir = await openTempDir('codi-revoke-');
    const path = join(dir, 'rules.yml');
    await writeFile(path, RULES);
    const now = new Date('2026-12-01T00:00:00Z');
    const r = await revokeAdapter('qwen', { rules: path, reason: 'leaks', now });
    expect(r).toMatchObject({ revoked: true, already: false, is_default: true, revocation: { checksum: A } });
    const e = await rejected(revokeAdapter('nobody', { rules: path, reason: 'x' }));
    expect([e.code, e.exitCode]).toEqual(['REVOKE_CHECKSUM_UNKNOWN', 2]);
    await revokeAdapter('nobody', { rules: path, reason: 'x', checksum: B, now });
    const revocations = await readRevocations(path);
    expect([
      revocations.of('qwen', A)?.reason,
      revocations.of('nobody', B)?.reason,
      revocations.of('qwen', B),
    ]).toEqual(['leaks', 'x', null]);
    // run's PATTERNS_RULES may be missing (no revocations); an asked-for file may not
    expect((await readRevocations(join(dir, 'missing.yml'), true)).of('qwen', A)).toBeNull();
    expect((await rejected(readRevocations(join(dir, 'missing.yml')))).exitCode).toBe(3);
    await writeFile(join(dir, 'broken.yml'), 'a: [');
    expect((await rejected(readRevocations(join(dir, 'broken.yml'), true))).code).toBe('RULES_YAML_INVALID');
  });
});

describe('promote and signatures', () => {
  it('records signed_by with --trust; promoting again without it keeps the record; a revoked adapter is refused', async () => {
    const dir = await openTempDir('codi-promote-sig-');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    await writeFile(join(dir, 'k.pem'), privateKey.export({ type: 'sec1', format: 'pem' }));
    await writeFile(join(dir, 'p.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const adapter = await makeAdapter(dir, 'tiny-qwen2-lora');
    await signAdapter(adapter, { key: join(dir, 'k.pem') });
    const rules = join(dir, 'rules.yml');
    await writeFile(rules, 'version: "1"\nllm_assist:\n  adapters:\n');
    const trust = await loadTrustedKeys(join(dir, 'p.pem'));
    const fingerprint = trust.keys[0]?.fingerprint;
    const first = await promoteAdapter(adapter, { rules, trust });
    expect([first.promoted, first.signed_by]).toEqual([true, fingerprint]);
    const recorded = await readFile(rules, 'utf8');
    expect(parseRules(recorded).llmAssist?.adapters?.['tiny-qwen2-lora']?.signed_by).toBe(fingerprint);
    const again = await promoteAdapter(adapter, { rules });
    expect([again.already, again.signed_by]).toEqual([true, fingerprint]);
    expect(await readFile(rules, 'utf8')).toBe(recorded);
    await revokeAdapter('tiny-qwen2-lora', { rules, reason: 'compromised key' });
    const e = await rejected(promoteAdapter(adapter, { rules }));
    expect([e.code, e.exitCode]).toEqual(['ADAPTER_REVOKED', 1]);
    expect(e.message).toMatch(/compromised key/u);
  });
});
