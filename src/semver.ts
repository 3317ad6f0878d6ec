/**
 * Semantic Versioning 2.0.0 precedence (rule 11 of that specification), for refusing version
 * downgrades. Own code rather than the `semver` package: numeric parts are bigints here (the grammar
 * bounds none), where `semver` refuses any above Number.MAX_SAFE_INTEGER.
 */

const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/u;

export interface SemVer {
  major: bigint;
  minor: bigint;
  patch: bigint;
  prerelease: string[];
}

export function parseSemver(text: string): SemVer | null {
  const m = SEMVER.exec(text);
  if (!m) return null;
  // bigint: the grammar puts no bound on a numeric part
  return {
    major: BigInt(m[1] ?? '0'),
    minor: BigInt(m[2] ?? '0'),
    patch: BigInt(m[3] ?? '0'),
    prerelease: m[4] === undefined ? [] : m[4].split('.'),
  };
}

export function isSemver(text: string): boolean {
  return SEMVER.test(text);
}

/** -1, 0 or 1 by SemVer precedence; build metadata is ignored, as the spec says. Throws on non-semver. */
export function compareSemver(a: string, b: string): -1 | 0 | 1 {
  const x = parseSemver(a);
  const y = parseSemver(b);
  if (!x || !y) throw new Error(`not a semantic version: ${JSON.stringify(x ? b : a)}`);
  for (const key of ['major', 'minor', 'patch'] as const) {
    if (x[key] !== y[key]) return x[key] < y[key] ? -1 : 1;
  }
  // a pre-release sorts before its release
  if (x.prerelease.length === 0 || y.prerelease.length === 0) {
    if (x.prerelease.length === y.prerelease.length) return 0;
    return x.prerelease.length === 0 ? 1 : -1;
  }
  const n = Math.min(x.prerelease.length, y.prerelease.length);
  for (let i = 0; i < n; i++) {
    const c = compareIdentifier(x.prerelease[i] ?? '', y.prerelease[i] ?? '');
    if (c !== 0) return c;
  }
  return x.prerelease.length === y.prerelease.length ? 0 : x.prerelease.length < y.prerelease.length ? -1 : 1;
}

function compareIdentifier(a: string, b: string): -1 | 0 | 1 {
  const an = /^\d+$/u.test(a);
  const bn = /^\d+$/u.test(b);
  if (an && bn) {
    const x = BigInt(a);
    const y = BigInt(b);
    return x === y ? 0 : x < y ? -1 : 1;
  }
  // numeric identifiers sort before alphanumeric ones
  if (an !== bn) return an ? -1 : 1;
  return a === b ? 0 : a < b ? -1 : 1;
}
