/**
 * Just enough of the WebAssembly binary format to write small hand-made modules (simd.ts,
 * wasm-scan.ts): LEB128 numbers, sections, names, the instructions they use and a way to
 * instantiate them. No toolchain and nothing to download: each module is listed instruction by
 * instruction where it is defined.
 */

// instructions, by their binary encoding (WebAssembly core specification 2.0)
export const OP = {
  block: 0x02,
  loop: 0x03,
  br: 0x0c,
  brIf: 0x0d,
  end: 0x0b,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Load: 0x28,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32GtU: 0x4b,
  i32Add: 0x6a,
  i32Sub: 0x6b,
} as const;

/** value and block types */
export const TYPE = { i32: 0x7f, v128: 0x7b, void: 0x40, func: 0x60 } as const;

/** export kinds */
export const EXPORT = { func: 0, memory: 2, global: 3 } as const;

export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

export const get = (local: number): number[] => [OP.localGet, local];
export const set = (local: number): number[] => [OP.localSet, local];
export const tee = (local: number): number[] => [OP.localTee, local];
export const i32 = (value: number): number[] => [OP.i32Const, ...sleb(value)];

export function section(id: number, content: number[]): number[] {
  return [id, ...uleb(content.length), ...content];
}

export function name(text: string): number[] {
  return [...uleb(text.length), ...Array.from(text, (c) => c.charCodeAt(0))];
}

/** A function body: local declarations (count, type pairs), then the code, then `end`. */
export function body(locals: [number, number][], code: number[]): number[] {
  const content = [...uleb(locals.length), ...locals.flatMap(([n, t]) => [...uleb(n), t]), ...code, OP.end];
  return [...uleb(content.length), ...content];
}

/** The module header: `\0asm`, version 1. */
export const MAGIC = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

// what this project uses of the WebAssembly JS API (the lib it compiles against omits it)
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
};

/** The exports of the module `bytes`, or null where it cannot be compiled (no WebAssembly, no SIMD). */
export function instantiate(bytes: number[]): Record<string, unknown> | null {
  try {
    return new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(bytes))).exports;
  } catch {
    return null;
  }
}
