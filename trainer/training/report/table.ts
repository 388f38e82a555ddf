import type { ComparisonRow } from './compare';

// The plain-text comparison table `idiom train` prints at the end (stderr without --json).

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '—';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatCount(n: number | null): string {
  if (n === null) return '—';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

export const TABLE_COLUMNS = [
  'model',
  'loss',
  'ppl',
  'bits/byte',
  'exact',
  'edit sim',
  'trainable',
  'size',
  'train min',
  'peak RSS',
  'split',
] as const;

export function rowCells(row: ComparisonRow): string[] {
  const m = row.metrics;
  const fixed = (x: number | undefined, digits: number) => (x === undefined ? '—' : x.toFixed(digits));
  return [
    row.name,
    fixed(m?.loss, 4),
    fixed(m?.perplexity, 2),
    fixed(m?.bitsPerByte, 4),
    m ? `${(m.exactMatch * 100).toFixed(1)}%` : '—',
    fixed(m?.editSimilarity, 3),
    formatCount(row.trainableParameters),
    formatBytes(row.fileBytes),
    row.seconds === null ? '—' : (row.seconds / 60).toFixed(2),
    formatBytes(row.peakRssBytes),
    row.source,
  ];
}

export function formatComparisonTable(rows: readonly ComparisonRow[]): string {
  const table = [TABLE_COLUMNS.slice() as string[], ...rows.map(rowCells)];
  const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
  const line = (cells: string[]) =>
    cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  return `${[line(table[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...table.slice(1).map(line)].join('\n')}\n`;
}
