/**
 * Strict UTF-8 decoding for text whose bytes matter: files we read and may write back, and the
 * safetensors header. Node's `'utf8'` decoding replaces a bad byte with U+FFFD without a word, so a file
 * read that way and written back has silently changed, and a header read that way names other tensors.
 */

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The text of `bytes`, or the offset of the first byte that is not UTF-8. A leading byte order mark is
 * kept as U+FEFF (not dropped), so writing the text back gives the same bytes.
 */
export function decodeUtf8(bytes: Uint8Array): { text: string } | { invalidAt: number } {
  try {
    return { text: decoder.decode(bytes) };
  } catch {
    return { invalidAt: firstInvalidUtf8(bytes) };
  }
}

/** Index of the first byte that does not start a well-formed UTF-8 sequence (Unicode table 3-7). */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i] ?? 0;
    if (b0 < 0x80) {
      i++;
      continue;
    }
    let length: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) length = 2;
    else if (b0 >= 0xe0 && b0 <= 0xef) {
      length = 3;
      if (b0 === 0xe0) lo = 0xa0;
      if (b0 === 0xed) hi = 0x9f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      length = 4;
      if (b0 === 0xf0) lo = 0x90;
      if (b0 === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k < length; k++) {
      const b = bytes[i + k];
      if (b === undefined || b < (k === 1 ? lo : 0x80) || b > (k === 1 ? hi : 0xbf)) return i;
    }
    i += length;
  }
  return bytes.length;
}

/** Why `bytes` is not UTF-8, in words: the byte and its offset, and a UTF-16 byte order mark if any. */
export function describeInvalidUtf8(bytes: Uint8Array, at: number): string {
  const byte = `0x${(bytes[at] ?? 0).toString(16).padStart(2, '0')}`;
  const utf16 =
    (bytes[0] === 0xff && bytes[1] === 0xfe) || (bytes[0] === 0xfe && bytes[1] === 0xff)
      ? '; it starts with a UTF-16 byte order mark'
      : '';
  return `not UTF-8: invalid byte ${byte} at byte offset ${at}${utf16}`;
}
