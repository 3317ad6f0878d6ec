import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { ALL_CODES, CHECK_NAMES, CODES, ExitCode, codeRow, isCode, type Code } from '../../src/codes.js';
import { ADAPTER_CODES } from '../../src/codes/adapter.js';
import { COMMAND_CODES } from '../../src/codes/commands.js';
import { WEIGHT_CODES } from '../../src/codes/weights.js';
import { CodiError } from '../../src/errors.js';
import { finding } from '../../src/findings.js';
import { checklistLine } from '../../src/verify.js';
import { lineOf, program, repoPath, walk } from '../helpers/source.js';

const EXIT_STATUSES = new Set<number>(Object.values(ExitCode));

describe('the codes registry', () => {
  it('has one row per code, each with its level, exit status, checklist line, summary and hint', () => {
    expect(ALL_CODES.length).toBeGreaterThan(100);
    for (const code of ALL_CODES) {
      const row = codeRow(code);
      expect(code).toMatch(/^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$/u);
      expect(['error', 'warning']).toContain(row.level);
      expect(EXIT_STATUSES.has(row.exit), code).toBe(true);
      expect([...CHECK_NAMES, 'reader', null]).toContain(row.check);
      expect(row.summary.length, code).toBeGreaterThan(10);
      expect(row.summary, code).not.toMatch(/\n|\.$/u);
      if (row.hint !== undefined) expect(row.hint, code).not.toMatch(/\n/u);
      for (const o of row.overrides ?? []) {
        expect(EXIT_STATUSES.has(o.exit), code).toBe(true);
        expect(o.exit, code).not.toBe(row.exit);
        expect(o.when.length, code).toBeGreaterThan(5);
      }
    }
  });

  it('holds each code in one area table only (a code in two would have two rows)', () => {
    const tables = [ADAPTER_CODES, COMMAND_CODES, WEIGHT_CODES].map((t) => Object.keys(t));
    expect(tables.flat().sort()).toEqual([...ALL_CODES].sort());
    expect(new Set(tables.flat()).size).toBe(tables.flat().length);
  });

  it('gives an error and a finding its exit status, level and hint unless the raise says otherwise', () => {
    const e = new CodiError('LOCK_HELD', 'held');
    expect([e.exitCode, e.hint]).toEqual([ExitCode.ENVIRONMENT, undefined]);
    const usage = new CodiError('CONFIG_INVALID', 'bad setting', {
      exitCode: ExitCode.USAGE,
      hint: 'fix it',
    });
    expect([usage.exitCode, usage.hint]).toEqual([ExitCode.USAGE, 'fix it']);
    expect(new CodiError('CACHE_UNWRITABLE', 'no room').hint).toBe(CODES.CACHE_UNWRITABLE.hint);
    expect(finding('FILE_UNCOVERED', 'x is not covered', 'x')).toEqual({
      level: 'warning',
      code: 'FILE_UNCOVERED',
      message: 'x is not covered',
      file: 'x',
      hint: CODES.FILE_UNCOVERED.hint,
    });
    expect(finding('LAYOUT_TOO_DEEP', 'deep', 'a/b', { pointer: '/p' })).toEqual({
      level: 'error',
      code: 'LAYOUT_TOO_DEEP',
      message: 'deep',
      file: 'a/b',
      pointer: '/p',
    });
  });

  it('puts a finding of every code on a checklist line, so none can fail a report without failing a line', () => {
    for (const code of ALL_CODES) {
      for (const file of ['adapter_config.json', 'metadata.json', 'adapter_model.safetensors', 'README.md']) {
        const line = checklistLine(code, file, 'adapter_model.safetensors');
        expect(CHECK_NAMES, `${code} about ${file}`).toContain(line);
        const declared = codeRow(code).check;
        if (declared !== null && declared !== 'reader') expect(line).toBe(declared);
      }
    }
    // a file that could not be read fails the line of the check that reads it
    expect(checklistLine('PATH_INACCESSIBLE', 'metadata.json', null)).toBe('metadata');
    expect(checklistLine('PATH_INACCESSIBLE', 'adapter_model.bin', 'adapter_model.bin')).toBe('weights');
  });
});

/**
 * Raise positions in src/: a string literal given as a parameter named `code` (or `…Code`), or as
 * the `code` property of an object literal, through conditionals and parentheses.
 */
interface Raise {
  code: string;
  where: string;
}

function raisesIn(p: ts.Program): { raises: Raise[]; casts: string[]; untyped: string[] } {
  const checker = p.getTypeChecker();
  const raises: Raise[] = [];
  const casts: string[] = [];
  const untyped: string[] = [];
  const codesFile = p.getSourceFiles().find((sf) => repoPath(sf.fileName) === 'src/codes.ts');
  const codeAlias = codesFile?.statements.find(
    (s): s is ts.TypeAliasDeclaration => ts.isTypeAliasDeclaration(s) && s.name.text === 'Code',
  );
  if (!codeAlias) throw new Error('src/codes.ts declares no type Code');
  const codeType = checker.getTypeAtLocation(codeAlias.name);
  for (const sf of p.getSourceFiles()) {
    const file = repoPath(sf.fileName);
    if (!file.startsWith('src/') || file === 'src/codes.ts') continue;
    walk(sf, (n) => {
      const where = `${file}:${lineOf(sf, n)}`;
      if (ts.isStringLiteral(n) && isRaisePosition(checker, n)) raises.push({ code: n.text, where });
      // a cast to a code type would let any string through
      if (ts.isAsExpression(n) || ts.isTypeAssertionExpression(n)) {
        if (ts.isTypeReferenceNode(n.type) || ts.isUnionTypeNode(n.type) || ts.isLiteralTypeNode(n.type)) {
          const target = checker.getTypeFromTypeNode(n.type);
          if (!(target.flags & ts.TypeFlags.Any) && checker.isTypeAssignableTo(target, codeType)) {
            casts.push(`${where} ${n.getText(sf)}`);
          }
        }
      }
      // a code declared as a plain string would let any string through too
      if ((ts.isParameter(n) || ts.isPropertySignature(n) || ts.isPropertyDeclaration(n)) && n.type) {
        const name = n.name.getText(sf);
        if (/^(?:code|\w+Code)$/u.test(name) && n.type.kind === ts.SyntaxKind.StringKeyword) {
          untyped.push(`${where} ${name}: string`);
        }
      }
    });
  }
  return { raises, casts, untyped };
}

function isRaisePosition(checker: ts.TypeChecker, literal: ts.StringLiteral): boolean {
  let node: ts.Node = literal;
  while (ts.isConditionalExpression(node.parent) || ts.isParenthesizedExpression(node.parent)) {
    if (ts.isConditionalExpression(node.parent) && node.parent.condition === node) return false;
    node = node.parent;
  }
  const parent = node.parent;
  if (ts.isPropertyAssignment(parent)) return parent.initializer === node && parent.name.getText() === 'code';
  if ((ts.isCallExpression(parent) || ts.isNewExpression(parent)) && parent.arguments) {
    const index = parent.arguments.indexOf(node as ts.Expression);
    const signature = index < 0 ? undefined : checker.getResolvedSignature(parent);
    const parameter = signature?.parameters[Math.min(index, signature.parameters.length - 1)];
    return parameter !== undefined && /^(?:code|\w+Code)$/u.test(parameter.name);
  }
  return false;
}

describe('the codes src/ raises', () => {
  let found: ReturnType<typeof raisesIn>;
  beforeAll(() => {
    found = raisesIn(program());
  }, 60_000);

  it('finds the raises it looks for (a scan that finds none would pass vacuously)', () => {
    const where = (code: string): string[] => found.raises.filter((r) => r.code === code).map((r) => r.where);
    expect(where('CHECKSUM_MISMATCH')).toEqual([expect.stringMatching(/^src\/verify\.ts:/u)]);
    expect(where('JSON_SYNTAX').length).toBeGreaterThan(5);
    expect(where('PATH_MISSING')).toEqual([expect.stringMatching(/^src\/errors\.ts:/u)]);
  });

  it('raises only registered codes', () => {
    expect(found.raises.filter((r) => !isCode(r.code))).toEqual([]);
  });

  it('raises every registered code somewhere (no dead rows)', () => {
    const raised = new Set(found.raises.map((r) => r.code));
    expect(ALL_CODES.filter((c: Code) => !raised.has(c))).toEqual([]);
  });

  it('never casts a string to a code, nor declares a code as a plain string', () => {
    expect(found.casts).toEqual([]);
    expect(found.untyped).toEqual([]);
  });
});
