/** Terminal rendering shared by the commands: checklists, findings, progress. Human output only. */
import { paint } from './paint.js';
import type { Finding } from './findings.js';
import type { CheckResult, CheckStatus } from './verify.js';
import { formatBytes } from './text.js';
import { nowMs } from './clock.js';

const MARK: Record<CheckStatus, () => string> = {
  pass: () => paint.green('✔'),
  warn: () => paint.yellow('⚠'),
  fail: () => paint.red('✖'),
  skip: () => paint.dim('-'),
};

const LABEL: Record<string, string> = {
  layout: 'layout',
  config: 'adapter_config.json',
  weights: 'weights header',
  tensors: 'tensors vs config',
  metadata: 'metadata.json',
  checksums: 'checksums',
  signature: 'signature',
  base: 'base model',
};

export function renderChecklist(checks: CheckResult[], findings: Finding[]): string {
  const width = Math.max(...checks.map((c) => (LABEL[c.name] ?? c.name).length));
  const lines: string[] = [];
  const shown = new Set<Finding>();
  for (const c of checks) {
    const label = (LABEL[c.name] ?? c.name).padEnd(width);
    lines.push(
      `${MARK[c.status]()} ${paint.bold(label)}  ${c.status === 'skip' ? paint.dim(c.summary) : c.summary}`,
    );
  }
  lines.push('');
  for (const f of findings) {
    if (shown.has(f)) continue;
    shown.add(f);
    lines.push(renderFinding(f));
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

export function renderFinding(f: Finding): string {
  const mark = f.level === 'error' ? paint.red('✖') : paint.yellow('⚠');
  const where = f.pointer ? `${f.file} ${f.pointer}` : f.file;
  let text = `${mark} ${paint.bold(f.code)} ${paint.dim(`[${where}]`)} ${f.message}`;
  if (f.hint) text += `\n    ${paint.dim('hint:')} ${f.hint}`;
  return text;
}

/** "1.2 GiB of 2.0 GiB, 850 MiB/s" */
export function progressText(file: string, done: number, total: number, startedMs: number): string {
  const seconds = Math.max((nowMs() - startedMs) / 1000, 0.001);
  const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
  return `hashing ${file}: ${pct}% (${formatBytes(done)} of ${formatBytes(total)}, ${formatBytes(done / seconds)}/s)`;
}
