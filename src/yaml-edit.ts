/**
 * Minimal-change edits of a YAML document. The `yaml` Document API finds the nodes and renders the
 * new values; the output is the original text with only the edited node's bytes replaced or a new
 * pair's lines inserted. Re-stringifying the whole document (`doc.toString()`) would re-indent
 * sequences, fold long lines, move comments and normalise spacing in parts the edit never touched,
 * which a hand-maintained rules file must not suffer.
 *
 * Every edit is proven afterwards: the result is parsed again and must equal, as data, the original
 * with the edits applied. If it does not, the edit is refused rather than written.
 *
 * A node that carries an anchor an alias refers to (`adapters: &ads …` and `mirror: *ads`) is never
 * edited, nor is anything inside one: the alias would change with it, so a part of the file the edit
 * does not touch would come to mean something else (YAML_EDIT_ANCHORED).
 */
import { isDeepStrictEqual } from 'node:util';
import {
  Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  Pair,
  parseDocument,
  Scalar,
  visit,
  YAMLMap,
  YAMLSeq,
  type Node,
} from 'yaml';
import { CodiError } from './errors.js';

export type YamlPath = readonly string[];

/** How a newly written value at an absolute path is rendered; undefined: block style, plain when safe. */
export type YamlStyle = (path: YamlPath) => 'flow' | 'quoted' | undefined;

export interface YamlEdit {
  /** map keys from the document root; missing maps on the way are created */
  path: YamlPath;
  /** JSON-like data: objects, arrays, strings, numbers, booleans, null */
  value: unknown;
  /** when the key is new: insert it before this sibling key (if present and not the first) */
  before?: string;
}

export interface ParsedYaml {
  doc: Document.Parsed;
  /** the document as plain data */
  data: unknown;
}

/** Parses one YAML document (YAML 1.2, duplicate keys refused). Throws YAML_SYNTAX (exit 1). */
export function parseYaml(text: string): ParsedYaml {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, strict: true });
  const first = doc.errors[0];
  if (first) {
    const pos = first.linePos?.[0];
    const where = pos ? ` at line ${pos.line}, column ${pos.col}` : '';
    const more = doc.errors.length > 1 ? ` (and ${doc.errors.length - 1} more)` : '';
    throw new CodiError('YAML_SYNTAX', `not valid YAML${where}: ${first.message}${more}`, {
      ...(pos ? { pointer: `${pos.line}:${pos.col}` } : {}),
    });
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new CodiError('YAML_SYNTAX', `not usable YAML: ${(e as Error).message}`);
  }
  return { doc, data };
}

/**
 * Applies `edits` in order and returns the new text. Bytes outside the edited nodes are unchanged.
 * Throws YAML_EDIT_UNSUPPORTED when a path runs through something that is not a mapping (or an alias),
 * YAML_EDIT_FAILED if the result would not mean what was asked.
 */
export function applyYamlEdits(
  text: string,
  edits: readonly YamlEdit[],
  style: YamlStyle = () => undefined,
): string {
  const original = parseYaml(text);
  refuseAnchoredEdits(text, original.doc, edits);
  let out = text;
  for (const edit of edits) out = applyOne(out, edit, style);
  if (out === text) return text;

  // unshared: an alias's data is the same object as its anchor's, and a clone that kept that would
  // expect the edit to show through the alias as well
  const expected = cloneUnshared(original.data);
  for (const edit of edits) setPath(expected, edit.path, edit.value);
  let actual: unknown;
  try {
    actual = parseYaml(out).data;
  } catch (e) {
    throw editFailed(`the edited text does not parse: ${(e as Error).message}`);
  }
  if (!isDeepStrictEqual(actual, expected))
    throw editFailed('the edited text does not hold the intended data');
  return out;
}

function editFailed(why: string): CodiError {
  return new CodiError('YAML_EDIT_FAILED', `refusing to write the YAML edit: ${why}`);
}

function unsupported(path: YamlPath, why: string): CodiError {
  return new CodiError('YAML_EDIT_UNSUPPORTED', `cannot edit ${path.join('.')}: ${why}`, {
    pointer: `/${path.join('/')}`,
  });
}

/** A deep copy of plain data in which no object appears twice (a cycle keeps its reference). */
function cloneUnshared(value: unknown, ancestors: unknown[] = []): unknown {
  if (value === null || typeof value !== 'object' || ancestors.includes(value)) return value;
  ancestors.push(value);
  try {
    if (Array.isArray(value)) return value.map((v) => cloneUnshared(v, ancestors));
    const proto = Object.getPrototypeOf(value) as object | null;
    if (proto !== Object.prototype && proto !== null) return structuredClone(value);
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = cloneUnshared(v, ancestors);
    return out;
  } finally {
    ancestors.pop();
  }
}

function setPath(root: unknown, path: YamlPath, value: unknown): void {
  let cur = root as Record<string, unknown>;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i] as string;
    const next = cur[key];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) cur[key] = {};
    cur = cur[key] as Record<string, unknown>;
  }
  cur[path[path.length - 1] as string] = structuredClone(value);
}

function nest(path: YamlPath, value: unknown): unknown {
  let v = value;
  for (let i = path.length - 1; i >= 0; i--) v = { [path[i] as string]: v };
  return v;
}

interface Ctx {
  text: string;
  eol: string;
  /** indentation step of nested block maps in this file */
  step: number;
  style: YamlStyle;
}

function applyOne(text: string, edit: YamlEdit, style: YamlStyle): string {
  if (edit.path.length === 0) throw unsupported(edit.path, 'an empty path');
  const { doc } = parseYaml(text);
  const ctx: Ctx = { text, eol: text.includes('\r\n') ? '\r\n' : '\n', step: indentStep(text, doc), style };
  let map: unknown = doc.contents;
  if (!isMap(map)) throw unsupported(edit.path, 'the document is not a mapping');
  let parent: Pair | null = null;
  for (let i = 0; i < edit.path.length; i++) {
    const key = edit.path[i] as string;
    const here = edit.path.slice(0, i + 1);
    const pair = findPair(map as YAMLMap, key);
    if (!pair) {
      return insertPair(
        ctx,
        map as YAMLMap,
        parent,
        edit.path.slice(0, i),
        key,
        nest(edit.path.slice(i + 1), edit.value),
        {
          ...(i === edit.path.length - 1 && edit.before !== undefined ? { before: edit.before } : {}),
        },
      );
    }
    if (i === edit.path.length - 1) return replaceValue(ctx, pair, here, edit.value);
    const value = pair.value;
    if (isAlias(value)) throw unsupported(here, 'it is an alias');
    if (isMap(value)) {
      // nested levels written here follow this map's own indentation relative to its key
      const keyAt = rangeOf(pair.key)?.[0];
      const childAt = rangeOf(value.items[0]?.key)?.[0];
      if (!value.flow && keyAt !== undefined && childAt !== undefined) {
        const step = columnOf(text, childAt) - columnOf(text, keyAt);
        if (step > 0) ctx.step = step;
      }
      parent = pair;
      map = value;
      continue;
    }
    if (value === null || (isScalar(value) && value.value === null)) {
      return replaceValue(ctx, pair, here, nest(edit.path.slice(i + 1), edit.value));
    }
    throw unsupported(here, 'it is not a mapping');
  }
  throw unsupported(edit.path, 'unreachable');
}

/** Every alias in the document by the anchor it names, with where it is (offsets). */
function aliasesByAnchor(doc: Document.Parsed): Map<string, number[]> {
  const out = new Map<string, number[]>();
  visit(doc, {
    Alias: (_, alias) => {
      const at = alias.range?.[0] ?? -1;
      out.set(alias.source, [...(out.get(alias.source) ?? []), at]);
    },
  });
  return out;
}

/**
 * Refuses (YAML_EDIT_ANCHORED) an edit that would change a node an alias shows: a map on its path
 * (inserting into it or changing something inside it changes the alias's data), or the node it
 * replaces and anything inside that. Checked on the original text, before any edit is made.
 */
function refuseAnchoredEdits(text: string, doc: Document.Parsed, edits: readonly YamlEdit[]): void {
  const aliases = aliasesByAnchor(doc);
  if (aliases.size === 0) return;
  for (const edit of edits) {
    let node: unknown = doc.contents;
    for (let i = 0; i < edit.path.length && isMap(node); i++) {
      refuseAnchored(text, aliases, node, edit.path.slice(0, i), edit.path);
      const pair = findPair(node, edit.path[i] as string);
      if (!pair) break;
      if (i === edit.path.length - 1 && pair.value) {
        const here = edit.path.slice(0, i + 1);
        visit(pair.value as Node, {
          Node: (_, n) => {
            refuseAnchored(text, aliases, n, here, edit.path);
          },
        });
      }
      node = pair.value;
    }
  }
}

function refuseAnchored(
  text: string,
  aliases: ReadonlyMap<string, number[]>,
  node: Node,
  nodePath: YamlPath,
  editPath: YamlPath,
): void {
  const anchor = (node as { anchor?: string }).anchor;
  const uses = anchor === undefined ? undefined : aliases.get(anchor);
  if (anchor === undefined || uses === undefined) return;
  const lines = uses.filter((at) => at >= 0).map((at) => text.slice(0, at).split('\n').length);
  const where = nodePath.length === 0 ? 'the document' : nodePath.join('.');
  throw new CodiError(
    'YAML_EDIT_ANCHORED',
    `cannot edit ${editPath.join('.')}: ${where} carries the anchor &${anchor}, which ${uses.length === 1 ? 'an alias refers to' : `${uses.length} aliases refer to`} (*${anchor}${lines.length > 0 ? ` at line ${lines.join(', ')}` : ''}); the edit would change that part of the file too`,
    {
      pointer: `/${editPath.join('/')}`,
      hint: `write ${where} out in full where *${anchor} is used (or drop the anchor), then try again; the file was not changed`,
      details: { anchor, aliases: lines },
    },
  );
}

function findPair(map: YAMLMap, key: string): Pair | undefined {
  return map.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
}

function rangeOf(node: unknown): [number, number, number] | null {
  const r = (node as Node | null)?.range;
  return r ? [r[0], r[1], r[2]] : null;
}

/** Column of offset `at` (0-based). */
function columnOf(text: string, at: number): number {
  return at - (text.lastIndexOf('\n', at - 1) + 1);
}

/** The offset just after the line break that ends the line holding `at - 1`; EOF if there is none. */
function lineEndAfter(text: string, at: number): number {
  if (at > 0 && text[at - 1] === '\n') return at;
  const nl = text.indexOf('\n', at);
  return nl === -1 ? text.length : nl + 1;
}

/** Nested block maps' indentation step in this file (2 when nothing says otherwise). */
function indentStep(text: string, doc: Document.Parsed): number {
  const top = doc.contents;
  if (!isMap(top)) return 2;
  const search = (map: YAMLMap, col: number): number | null => {
    for (const p of map.items) {
      if (isMap(p.value) && !p.value.flow) {
        const r = rangeOf(p.value);
        if (r) {
          const child = columnOf(text, r[0]);
          if (child > col) return child - col;
        }
      }
    }
    return null;
  };
  const r = rangeOf(top);
  return search(top, r ? columnOf(text, r[0]) : 0) ?? 2;
}

/** Offset just after the `:` that separates `pair`'s key from its value. */
function colonEnd(ctx: Ctx, pair: Pair, path: YamlPath): number {
  const k = rangeOf(pair.key);
  if (!k) throw unsupported(path, 'the key has no source position');
  const m = /^[ \t]*:/u.exec(ctx.text.slice(k[1]));
  if (!m) throw unsupported(path, 'explicit (?) keys are not supported');
  return k[1] + m[0].length;
}

function replaceValue(ctx: Ctx, pair: Pair, path: YamlPath, value: unknown): string {
  const old = pair.value;
  if (isAlias(old)) throw unsupported(path, 'it is an alias');
  const r = rangeOf(old);
  const collection = isCollectionValue(value);
  const wantFlow = collection && (ctx.style(path) === 'flow' || isEmptyCollection(value));
  const { text } = ctx;
  const splice = (t: string, from: number, to: number, insert: string): string =>
    t.slice(0, from) + insert + t.slice(to);

  const isFlowOld = (isMap(old) || isSeq(old)) && old.flow === true;
  const isBlockOld = (isMap(old) || isSeq(old)) && !old.flow;
  const isBlockScalar =
    isScalar(old) && (old.type === Scalar.BLOCK_FOLDED || old.type === Scalar.BLOCK_LITERAL);
  const isInlineScalar = isScalar(old) && !isBlockScalar && r !== null;

  // the same kind of node: replace its own bytes only (comments around it stay)
  if (!collection && isInlineScalar && r[1] > r[0]) {
    return splice(text, r[0], r[1], renderScalar(value, path, ctx, isScalar(old) ? old.type : undefined));
  }
  if (collection && isFlowOld && r) return splice(text, r[0], r[1], renderFlow(value, path, ctx));
  if (collection && !wantFlow && isBlockOld && r) {
    const col = columnOf(text, r[0]);
    const block = trimEol(renderBlockValue(value, path, ctx, col));
    // the old block's range ends after its last line break, when it has one
    const trailing = text.slice(r[0], r[1]).endsWith('\n') ? ctx.eol : '';
    return splice(text, r[0], r[1], block.slice(col) + trailing);
  }
  const keyCol = columnOf(text, rangeOf(pair.key)?.[0] ?? 0);

  // an inline scalar or an empty value (`key:`, `key: ~ # why`): write at its place on the key's line
  if (isInlineScalar || old === null) {
    let at = r ? r[0] : colonEnd(ctx, pair, path);
    let t = text;
    if (r && r[1] > r[0]) t = splice(t, r[0], r[1], '');
    else if (!r) at = colonEnd(ctx, pair, path);
    if (!collection || wantFlow) {
      const rendered = collection ? renderFlow(value, path, ctx) : renderScalar(value, path, ctx);
      const before = /[ \t]/u.test(t[at - 1] ?? '') ? '' : ' ';
      const after = /^[ \t]*#/u.test(t.slice(at)) && !/^[ \t]/u.test(t.slice(at)) ? ' ' : '';
      return splice(t, at, at, `${before}${rendered}${after}`);
    }
    // a block collection starts on the next line; a comment after the key stays on the key's line
    const nl = t.indexOf('\n', at);
    let lineEnd = nl === -1 ? t.length : nl;
    if (lineEnd > 0 && t[lineEnd - 1] === '\r') lineEnd--;
    const block = trimEol(renderBlockValue(value, path, ctx, keyCol + ctx.step));
    return splice(t, lineEnd, lineEnd, ctx.eol + block);
  }

  // a block scalar or a block collection becoming something else: rewrite from the colon on
  const from = colonEnd(ctx, pair, path);
  let to = r ? Math.max(r[1], from) : from;
  // a block value's range ends after its line break(s); they stay
  while (to > from && (text[to - 1] === '\n' || text[to - 1] === '\r')) to--;
  let insert: string;
  if (!collection) insert = ` ${renderScalar(value, path, ctx)}`;
  else if (wantFlow) insert = ` ${renderFlow(value, path, ctx)}`;
  else insert = `${ctx.eol}${trimEol(renderBlockValue(value, path, ctx, keyCol + ctx.step))}`;
  return splice(text, from, to, insert);
}

function trimEol(text: string): string {
  return text.replace(/(\r?\n)+$/u, '');
}

function insertPair(
  ctx: Ctx,
  map: YAMLMap,
  parent: Pair | null,
  mapPath: YamlPath,
  key: string,
  value: unknown,
  options: { before?: string },
): string {
  const { text } = ctx;
  const path = [...mapPath, key];
  const r = rangeOf(map);
  if (!r) throw unsupported(path, 'the mapping has no source position');
  if (map.flow) {
    const data = (map.toJSON() ?? {}) as Record<string, unknown>;
    return text.slice(0, r[0]) + renderFlow({ ...data, [key]: value }, mapPath, ctx) + text.slice(r[1]);
  }
  const first = map.items[0];
  const col = columnOf(text, rangeOf(first?.key)?.[0] ?? r[0]);
  const beforeIndex =
    options.before === undefined
      ? -1
      : map.items.findIndex((p) => isScalar(p.key) && String(p.key.value) === options.before);
  let at: number;
  const previous = beforeIndex > 0 ? map.items[beforeIndex - 1] : undefined;
  if (previous) {
    // right after the previous pair, so comments that introduce the `before` key stay with it
    at = lineEndAfter(text, rangeOf(previous.value)?.[1] ?? rangeOf(previous.key)?.[1] ?? r[1]);
  } else if (beforeIndex === 0 && parent) {
    // first in the map: right under the parent key's line
    at = lineEndAfter(text, colonEnd(ctx, parent, mapPath));
  } else if (beforeIndex === 0) {
    at = text.lastIndexOf('\n', rangeOf(first?.key)?.[0] ?? r[0]) + 1;
  } else {
    at = lineEndAfter(text, r[1]);
  }
  let lines = renderPair(key, value, path, ctx, col);
  if (at === text.length && text.length > 0 && !text.endsWith('\n')) lines = ctx.eol + lines;
  return text.slice(0, at) + lines + text.slice(at);
}

function isCollectionValue(value: unknown): boolean {
  return value !== null && typeof value === 'object';
}

function isEmptyCollection(value: unknown): boolean {
  if (Array.isArray(value)) return value.length === 0;
  return value !== null && typeof value === 'object' && Object.keys(value).length === 0;
}

// ---------------------------------------------------------------------------------------------------
// Rendering new values with the yaml stringifier

/**
 * Plain scalars that YAML 1.1 readers (PyYAML, which CODI's Python side may use) would read as
 * something else (`yes`, `on`, `1_000`, `1:20`) are quoted; 1.1 timestamps are left plain, as the
 * documented example writes `promoted_at`.
 */
function needsQuotes(value: string): boolean {
  const as11 = parseDocument(value, { version: '1.1' });
  const v: unknown = isScalar(as11.contents) ? as11.contents.value : undefined;
  if (v instanceof Date) return false;
  return v !== value;
}

function buildNode(
  value: unknown,
  path: YamlPath,
  ctx: Ctx,
  forceFlow = false,
  keepType?: Scalar.Type,
): Node {
  const flow = forceFlow || ctx.style(path) === 'flow';
  if (Array.isArray(value)) {
    const seq = new YAMLSeq();
    value.forEach((v, i) => seq.items.push(buildNode(v, [...path, String(i)], ctx, flow)));
    seq.flow = flow;
    return seq;
  }
  if (value !== null && typeof value === 'object') {
    const map = new YAMLMap();
    for (const [k, v] of Object.entries(value)) {
      map.items.push(new Pair(buildScalar(k, false), buildNode(v, [...path, k], ctx, flow)));
    }
    map.flow = flow;
    return map;
  }
  if (keepType === Scalar.QUOTE_DOUBLE || keepType === Scalar.QUOTE_SINGLE) {
    const s = new Scalar(value);
    if (typeof value === 'string') s.type = keepType;
    return s;
  }
  return buildScalar(value, ctx.style(path) === 'quoted');
}

function buildScalar(value: unknown, quoted: boolean): Scalar {
  const s = new Scalar(value);
  if (typeof value === 'string') s.type = quoted || needsQuotes(value) ? Scalar.QUOTE_DOUBLE : Scalar.PLAIN;
  return s;
}

function stringify(node: Node, ctx: Ctx): string {
  const doc = new Document();
  doc.contents = node;
  return doc.toString({ indent: ctx.step, lineWidth: 0, flowCollectionPadding: true });
}

function withEol(text: string, ctx: Ctx): string {
  return ctx.eol === '\n' ? text : text.replace(/\n/gu, ctx.eol);
}

function renderScalar(value: unknown, path: YamlPath, ctx: Ctx, keepType?: Scalar.Type): string {
  return withEol(stringify(buildNode(value, path, ctx, false, keepType), ctx).replace(/\n$/u, ''), ctx);
}

function renderFlow(value: unknown, path: YamlPath, ctx: Ctx): string {
  return withEol(stringify(buildNode(value, path, ctx, true), ctx).replace(/\n$/u, ''), ctx);
}

/** A block collection's lines, every line indented to `col`, ending with a line break. */
function renderBlockValue(value: unknown, path: YamlPath, ctx: Ctx, col: number): string {
  return indentLines(stringify(buildNode(value, path, ctx), ctx), col, ctx);
}

/** `key: value` as whole lines at column `col`. */
function renderPair(key: string, value: unknown, path: YamlPath, ctx: Ctx, col: number): string {
  const map = new YAMLMap();
  map.items.push(new Pair(buildScalar(key, false), buildNode(value, path, ctx)));
  return indentLines(stringify(map, ctx), col, ctx);
}

function indentLines(text: string, col: number, ctx: Ctx): string {
  const pad = ' '.repeat(col);
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  return (
    body
      .split('\n')
      .map((line) => (line === '' ? line : pad + line))
      .join(ctx.eol) + ctx.eol
  );
}
