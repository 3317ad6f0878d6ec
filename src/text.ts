/** Small text formatting shared by the library's summaries and the commands' output. */

/** 1234567 → "1,234,567" (Intl's toLocaleString is slow to initialise, for a short command). */
export function thousands(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/gu, ',');
}

/** "1 tensor", "28 tensors" */
export function plural(n: number, word: string): string {
  return `${thousands(n)} ${word}${n === 1 ? '' : 's'}`;
}

/** 70656 → "69 KiB" */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i] ?? 'TiB'}`;
}

/** 608.0465 → "608 ms", 1500 → "1.5 s", 4000 → "4 s": a duration as a person reads it. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  return `${Number(s.toFixed(s < 10 ? 2 : 1))} s`;
}
