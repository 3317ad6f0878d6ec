import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asCodiError, fromFormatError } from '../../src/errors.js';
import { FormatError } from '../../src/formats/format-error.js';
import { openZip, withZip } from '../../src/files/torch-bin.js';
import { memorySource, quoteName, ZipArchive, ZIP_ERROR_CODES } from '../../src/formats/zip.js';
import { zipBytes, type ZipInputEntry } from '../../src/testkit/torch-bin.js';

const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

const ENTRIES: ZipInputEntry[] = [
  { name: 'archive/data.pkl', data: text('pickle bytes') },
  { name: 'archive/data/0', data: new Uint8Array(1000).map((_, i) => i % 251) },
  { name: 'archive/notes.txt', data: text('hello '.repeat(500)), method: 8 },
  { name: 'archive/empty', data: new Uint8Array(0) },
];

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    const e = asCodiError(err);
    if (!e) throw err;
    return e.code;
  }
  return 'OK';
}

/** Offsets of a 4-byte little-endian signature in `bytes`. */
function find(bytes: Uint8Array, sig: number): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 4 <= bytes.length; i++) if (dv.getUint32(i, true) === sig) out.push(i);
  return out;
}

function patched(bytes: Uint8Array, patch: (dv: DataView) => void): Uint8Array {
  const copy = bytes.slice();
  patch(new DataView(copy.buffer));
  return copy;
}

const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

async function readAll(zip: ZipArchive): Promise<void> {
  for (const e of zip.entries) await zip.read(e);
}

describe('ZipArchive', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'codi-zip-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const zip64 of [false, true]) {
    it(`lists and reads STORED and DEFLATE entries${zip64 ? ' (ZIP64)' : ''}`, async () => {
      const bytes = zipBytes(ENTRIES, { zip64 });
      const zip = await ZipArchive.fromBytes(bytes);
      expect(zip.entries.map((e) => e.name)).toEqual(ENTRIES.map((e) => e.name));
      for (const input of ENTRIES) {
        const entry = zip.get(input.name);
        expect(entry).toBeDefined();
        if (entry === undefined) continue;
        expect(entry.method).toBe(input.method ?? 0);
        expect(entry.uncompressedSize).toBe(input.data.length);
        if (entry.method === 0) expect(entry.dataOffset % 64).toBe(0);
        expect(Buffer.from(await zip.read(entry)).equals(Buffer.from(input.data))).toBe(true);
      }
    });
  }

  it('reads from a file with positioned reads, and closes it', async () => {
    const path = join(dir, 'a.zip');
    await writeFile(path, zipBytes(ENTRIES));
    const names = await withZip(path, (zip) => Promise.resolve(zip.entries.map((e) => e.name)));
    expect(names).toHaveLength(ENTRIES.length);
    const e = await codeOf(openZip(join(dir, 'missing.zip')));
    expect(e).toBe('PATH_MISSING');
  });

  it('refuses an empty file, a non-zip and appended bytes', async () => {
    expect(await codeOf(ZipArchive.fromBytes(new Uint8Array(0)))).toBe('BIN_ZIP_TRUNCATED');
    expect(await codeOf(ZipArchive.fromBytes(text('just some text, no zip here at all')))).toBe(
      'BIN_ZIP_INVALID',
    );
    const appended = Buffer.concat([zipBytes(ENTRIES), Buffer.from('#!/bin/sh\n')]);
    expect(await codeOf(ZipArchive.fromBytes(appended))).toBe('BIN_ZIP_INVALID');
  });

  it('reports every truncation as BIN_ZIP_TRUNCATED', async () => {
    for (const zip64 of [false, true]) {
      const bytes = zipBytes(ENTRIES, { zip64 });
      for (const cut of [1, 4, 30, 100, bytes.length / 2, bytes.length - 23, bytes.length - 1].map(
        Math.floor,
      )) {
        expect(await codeOf(ZipArchive.fromBytes(bytes.subarray(0, cut)))).toBe('BIN_ZIP_TRUNCATED');
      }
    }
  });

  it('checks the CRC-32 of what it reads', async () => {
    const bytes = zipBytes(ENTRIES);
    const zip0 = await ZipArchive.fromBytes(bytes);
    const entry = zip0.get('archive/data/0');
    if (entry === undefined) throw new Error('no entry');
    const damaged = patched(bytes, (dv) => {
      dv.setUint8(entry.dataOffset + 10, dv.getUint8(entry.dataOffset + 10) ^ 0xff);
    });
    const zip = await ZipArchive.fromBytes(damaged);
    const e = await codeOf(zip.read(zip.get('archive/data/0') ?? entry));
    expect(e).toBe('BIN_ZIP_INVALID');
  });

  it('caps what it reads whole, before reading', async () => {
    const zip = await ZipArchive.fromBytes(zipBytes(ENTRIES));
    const entry = zip.get('archive/data/0');
    if (entry === undefined) throw new Error('no entry');
    expect(await codeOf(zip.read(entry, 999))).toBe('BIN_ZIP_ENTRY_TOO_LARGE');
    expect((await zip.read(entry, 1000)).length).toBe(1000);
  });

  it('refuses a deflate entry that inflates past its declared size (a bomb)', async () => {
    const bytes = zipBytes([{ name: 'a/bomb', data: new Uint8Array(1 << 20), method: 8 }]);
    const small = patched(bytes, (dv) => {
      for (const at of find(bytes, LOCAL)) dv.setUint32(at + 22, 100, true);
      for (const at of find(bytes, CENTRAL)) dv.setUint32(at + 24, 100, true);
    });
    const zip = await ZipArchive.fromBytes(small);
    const entry = zip.get('a/bomb');
    if (entry === undefined) throw new Error('no entry');
    expect(await codeOf(zip.read(entry))).toBe('BIN_ZIP_INVALID');
  });

  it('refuses duplicate names, local headers that disagree, and overlapping entries', async () => {
    const dup = zipBytes([
      { name: 'a/x', data: text('one') },
      { name: 'a/x', data: text('two') },
    ]);
    expect(await codeOf(ZipArchive.fromBytes(dup))).toBe('BIN_ZIP_INVALID');

    const bytes = zipBytes([
      { name: 'a/x', data: text('one') },
      { name: 'a/y', data: text('two') },
    ]);
    const centrals = find(bytes, CENTRAL);
    const second = centrals[1] ?? 0;
    // the second central entry points at the first local header
    const overlapping = patched(bytes, (dv) => {
      dv.setUint32(second + 42, 0, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(overlapping))).toBe('BIN_ZIP_INVALID');

    const crcLies = patched(bytes, (dv) => {
      dv.setUint32(second + 16, 0x12345678, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(crcLies))).toBe('BIN_ZIP_INVALID');

    const sizeLies = patched(bytes, (dv) => {
      dv.setUint32(second + 20, 1_000_000, true);
      dv.setUint32(second + 24, 1_000_000, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(sizeLies))).toBe('BIN_ZIP_INVALID');

    const storedSizes = patched(bytes, (dv) => {
      dv.setUint32(second + 24, 4, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(storedSizes))).toBe('BIN_ZIP_INVALID');
  });

  it('refuses encryption, other compression methods and several disks', async () => {
    const bytes = zipBytes([{ name: 'a/x', data: text('one') }]);
    const at = find(bytes, CENTRAL)[0] ?? 0;
    const encrypted = patched(bytes, (dv) => {
      dv.setUint16(at + 8, 1, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(encrypted))).toBe('BIN_ZIP_UNSUPPORTED');
    const bzip2 = patched(bytes, (dv) => {
      dv.setUint16(at + 10, 12, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(bzip2))).toBe('BIN_ZIP_UNSUPPORTED');
    const eocd = bytes.length - 22;
    const disks = patched(bytes, (dv) => {
      dv.setUint16(eocd + 4, 1, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(disks))).toBe('BIN_ZIP_UNSUPPORTED');
  });

  it('refuses a ZIP64 record that disagrees with the classic one, and sizes beyond 2^53', async () => {
    const bytes = zipBytes(ENTRIES, { zip64: true });
    const eocd = bytes.length - 22;
    const disagree = patched(bytes, (dv) => {
      dv.setUint16(eocd + 10, 3, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(disagree))).toBe('BIN_ZIP_INVALID');
    const record = find(bytes, 0x06064b50)[0] ?? 0;
    const huge = patched(bytes, (dv) => {
      dv.setBigUint64(record + 48, 2n ** 60n, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(huge))).toBe('BIN_ZIP_INVALID');
    const entryCount = patched(bytes, (dv) => {
      dv.setBigUint64(record + 24, 2n ** 40n, true);
      dv.setBigUint64(record + 32, 2n ** 40n, true);
    });
    expect(ZIP_ERROR_CODES).toContain(await codeOf(ZipArchive.fromBytes(entryCount)));
  });

  it('reads the layout torch.save writes: data descriptors after the data, zeros in the local headers', async () => {
    for (const zip64 of [false, true]) {
      const zip = await ZipArchive.fromBytes(zipBytes(ENTRIES, { zip64, descriptors: true }));
      await readAll(zip);
      expect(zip.entries.map((e) => e.flags)).toEqual(ENTRIES.map(() => 0x0808));
    }
  });

  // miniz, torch's reader, finds the last end signature in the file, also one inside the comment of
  // the real record (torch 2.13 and 1.13 loaded the archive the comment described)
  it('refuses an end-record comment, which can hold a second end record', async () => {
    const inner = zipBytes(ENTRIES.slice(0, 1));
    const withEnd = zipBytes(ENTRIES, { comment: inner.subarray(inner.length - 22) });
    expect(await codeOf(ZipArchive.fromBytes(withEnd))).toBe('BIN_ZIP_INVALID');
    const plain = zipBytes(ENTRIES, { comment: text('made by hand') });
    const err = await ZipArchive.fromBytes(plain).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
    expect((err as FormatError).message).toMatch(/comment/);
  });

  it('refuses names that differ only in the case of their letters, as miniz looks them up', async () => {
    const twins = zipBytes([
      { name: 'archive/data.pkl', data: text('one') },
      { name: 'archive/Data.pkl', data: text('two') },
    ]);
    const err = await ZipArchive.fromBytes(twins).catch((e: unknown) => e);
    expect((err as FormatError).code).toBe('BIN_ZIP_INVALID');
    expect((err as FormatError).message).toMatch(/differ only in case/);
    // only ASCII letters fold, as MZ_TOLOWER: these are two names to every reader
    const distinct = zipBytes([
      { name: 'a/\u00e9', data: text('one') },
      { name: 'a/\u00c9', data: text('two') },
    ]);
    expect((await ZipArchive.fromBytes(distinct)).entries).toHaveLength(2);
  });

  it('refuses bytes no entry accounts for: before the first, between two, hidden local entries', async () => {
    // an archive prepended to, its offsets moved along: torch loads it (it starts with a local header)
    const before = zipBytes(ENTRIES, { before: zipBytes(ENTRIES.slice(0, 1)).subarray(0, 40) });
    expect(await codeOf(ZipArchive.fromBytes(before))).toBe('BIN_ZIP_INVALID');
    const gap = zipBytes([{ ...ENTRIES[0], after: text('#!/bin/sh') } as ZipInputEntry, ...ENTRIES.slice(1)]);
    expect(await codeOf(ZipArchive.fromBytes(gap))).toBe('BIN_ZIP_INVALID');
    const hidden = zipBytes([
      { name: 'archive/payload.pkl', data: text('hidden'), hidden: true },
      ...ENTRIES,
    ]);
    expect(await codeOf(ZipArchive.fromBytes(hidden))).toBe('BIN_ZIP_INVALID');
    // after a data descriptor, exactly the descriptor: not one byte more, nor one that disagrees
    const afterDescriptor = zipBytes(
      [{ ...ENTRIES[1], after: new Uint8Array(4) } as ZipInputEntry, ENTRIES[0] as ZipInputEntry],
      { descriptors: true },
    );
    expect(await codeOf(ZipArchive.fromBytes(afterDescriptor))).toBe('BIN_ZIP_INVALID');
    const good = zipBytes(ENTRIES.slice(0, 2), { descriptors: true });
    const lying = patched(good, (dv) => {
      const at = find(good, 0x08074b50)[0] ?? 0;
      dv.setUint32(at + 8, 999, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(lying))).toBe('BIN_ZIP_INVALID');
  });

  it('refuses a local header that names another file than its central entry', async () => {
    const renamed = zipBytes([{ name: 'archive/data.pkl', localName: 'archive/datap.kl', data: text('x') }]);
    expect(await codeOf(ZipArchive.fromBytes(renamed))).toBe('BIN_ZIP_INVALID');
  });

  it('refuses directory entries that carry data, and entries that declare data but store none', async () => {
    expect(
      (await ZipArchive.fromBytes(zipBytes([{ name: 'archive/', data: new Uint8Array(0) }]))).entries,
    ).toHaveLength(1);
    const dirData = zipBytes([{ name: 'archive/', data: text('payload') }]);
    expect(await codeOf(ZipArchive.fromBytes(dirData))).toBe('BIN_ZIP_INVALID');
    const bytes = zipBytes([{ name: 'a/x', data: text('x'), method: 8 }]);
    const at = find(bytes, CENTRAL)[0] ?? 0;
    const none = patched(bytes, (dv) => {
      dv.setUint32(at + 20, 0, true);
    });
    expect(await codeOf(ZipArchive.fromBytes(none))).toBe('BIN_ZIP_INVALID');
  });

  // torch fails on these when it extracts the entry (flag bits 0 and 6 "unsupported encryption",
  // bit 5 "unsupported feature"), and at open for bit 13
  it('refuses encrypted, patched and masked entries', async () => {
    for (const flags of [0x0001, 0x0020, 0x0040, 0x2000]) {
      const bytes = zipBytes([{ name: 'a/x', data: text('x'), flags }]);
      expect(await codeOf(ZipArchive.fromBytes(bytes))).toBe('BIN_ZIP_UNSUPPORTED');
    }
  });

  it('quotes names with control and bidi characters visibly', () => {
    expect(quoteName('a\u001b[31mb\u202ec"')).toBe('"a\\u001b[31mb\\u202ec\\""');
  });

  it('raises nothing but a format error (exit 1) on random mutations, and never hangs', async () => {
    const base = zipBytes(ENTRIES.slice(0, 3), { zip64: false });
    const base64 = zipBytes(ENTRIES.slice(0, 3), { zip64: true });
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.option(fc.nat(), { nil: undefined }),
        async (use64, edits, cut) => {
          const source = use64 ? base64 : base;
          const bytes = source.slice(0, cut === undefined ? source.length : cut % (source.length + 1));
          for (const [at, value] of edits) if (bytes.length > 0) bytes[at % bytes.length] = value;
          try {
            const zip = await ZipArchive.fromSource(memorySource(bytes));
            await readAll(zip);
          } catch (err) {
            if (!(err instanceof FormatError)) throw err;
            expect(fromFormatError(err).exitCode).toBe(1);
          }
        },
      ),
      { numRuns: 1500 },
    );
  });
});
