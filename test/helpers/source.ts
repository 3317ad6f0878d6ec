/** The project's own TypeScript sources, parsed, for tests that hold the code to its rules. */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const SRC = join(REPO, 'src');

/** Every `.ts` file under `dir`, as absolute paths, in a stable order. */
export function tsFiles(dir = SRC): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .sort()
    .map((f) => join(dir, f));
}

/** `path` relative to the repository, `/`-separated. */
export function repoPath(path: string): string {
  return relative(REPO, path).split('\\').join('/');
}

export function parse(path: string): ts.SourceFile {
  return ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true);
}

/** A program over every source file, with the type checker (a few seconds). */
export function program(): ts.Program {
  const config = ts.readConfigFile(join(REPO, 'tsconfig.build.json'), (p) => ts.sys.readFile(p));
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, REPO);
  return ts.createProgram(tsFiles(), parsed.options);
}

/** Calls `visit` on every node below `node`, depth first. */
export function walk(node: ts.Node, visit: (n: ts.Node) => void): void {
  visit(node);
  node.forEachChild((child) => {
    walk(child, visit);
  });
}

/** 1-based line of a node's first character. */
export function lineOf(sf: ts.SourceFile, node: ts.Node): number {
  return sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
}

/** How many lines a node spans. */
export function linesOf(sf: ts.SourceFile, node: ts.Node): number {
  return sf.getLineAndCharacterOfPosition(node.getEnd()).line + 1 - lineOf(sf, node) + 1;
}
