/** The rules the source keeps: pure formats, and files and functions of a size one can change safely. */
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { linesOf, lineOf, parse, repoPath, SRC, tsFiles, walk } from '../helpers/source.js';

const MAX_FILE_LINES = 700;
const MAX_FUNCTION_LINES = 80;
/** the pickle opcode interpreter: one opcode per case, kept in one switch on purpose */
const INTERPRETER = 'src/formats/pickle.ts';

describe('src/formats/ is pure: bytes in, typed values or format errors out', () => {
  const files = tsFiles(join(SRC, 'formats'));

  /** What a file imports (or re-exports) at run time: module names, type-only imports left out. */
  function runtimeImports(sf: ts.SourceFile): string[] {
    const out: string[] = [];
    for (const s of sf.statements) {
      if (ts.isImportDeclaration(s)) {
        const clause = s.importClause;
        const typeOnly =
          clause !== undefined &&
          (clause.phaseModifier === ts.SyntaxKind.TypeKeyword ||
            (clause.name === undefined &&
              clause.namedBindings !== undefined &&
              ts.isNamedImports(clause.namedBindings) &&
              clause.namedBindings.elements.every((e) => e.isTypeOnly)));
        if (!typeOnly) out.push((s.moduleSpecifier as ts.StringLiteral).text);
      } else if (ts.isExportDeclaration(s) && s.moduleSpecifier && !s.isTypeOnly) {
        out.push((s.moduleSpecifier as ts.StringLiteral).text);
      }
    }
    walk(sf, (n) => {
      if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
        const [arg] = n.arguments;
        out.push(arg && ts.isStringLiteral(arg) ? arg.text : '(computed)');
      }
    });
    return out;
  }

  it('imports nothing outside src/formats/ but types (and Node built-ins)', () => {
    expect(files.map(repoPath)).toContain('src/formats/strict-json.ts');
    const outside = files.flatMap((f) =>
      runtimeImports(parse(f))
        .filter((m) => !m.startsWith('./') && !m.startsWith('node:'))
        .map((m) => `${repoPath(f)} imports ${m}`),
    );
    expect(outside).toEqual([]);
  });

  it('carries no exit status and no hint', () => {
    const found: string[] = [];
    for (const f of files) {
      const sf = parse(f);
      walk(sf, (n) => {
        if (ts.isIdentifier(n) && ['exitCode', 'ExitCode', 'hint'].includes(n.text)) {
          found.push(`${repoPath(f)}:${lineOf(sf, n)} ${n.text}`);
        }
      });
    }
    expect(found).toEqual([]);
  });
});

describe('sizes', () => {
  const files = tsFiles().map((f) => ({ path: repoPath(f), sf: parse(f) }));

  it(`no source file is over ${MAX_FILE_LINES} lines (but the pickle interpreter)`, () => {
    expect(files.length).toBeGreaterThan(50);
    const long = files
      .filter((f) => f.path !== INTERPRETER)
      .map((f) => ({ path: f.path, lines: f.sf.getLineAndCharacterOfPosition(f.sf.getEnd()).line }))
      .filter((f) => f.lines > MAX_FILE_LINES);
    expect(long).toEqual([]);
  });

  it(`no function is over ${MAX_FUNCTION_LINES} lines (but the interpreter's opcode switch)`, () => {
    const long: string[] = [];
    let measured = 0;
    for (const { path, sf } of files) {
      walk(sf, (n) => {
        if (!ts.isFunctionLike(n) || !('body' in n) || n.body === undefined) return;
        measured++;
        let lines = linesOf(sf, n);
        // the interpreter's switch counts for nothing; what is around it counts as usual
        if (path === INTERPRETER) {
          walk(n.body, (inner) => {
            if (ts.isSwitchStatement(inner) && linesOf(sf, inner) > MAX_FUNCTION_LINES)
              lines -= linesOf(sf, inner);
          });
        }
        if (lines > MAX_FUNCTION_LINES) long.push(`${path}:${lineOf(sf, n)} ${lines} lines`);
      });
    }
    expect(measured).toBeGreaterThan(500);
    expect(long).toEqual([]);
  });
});
