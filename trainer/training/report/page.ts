import * as fs from 'node:fs';
import * as path from 'node:path';

// What the report pages share: Chart.js inlined, escaping, data as JSON inside a <script>.

/** Chart.js's UMD build, or null where node_modules is not shipped (a page then has tables only). */
export function chartJsSource(): string | null {
  try {
    // The package exports only its module entries; the UMD build sits beside the CommonJS one.
    return fs.readFileSync(path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.min.js'), 'utf8');
  } catch {
    return null;
  }
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside a <script> element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * A Chart.js tick callback (page JavaScript) that writes small numbers as people write learning
 * rates: 3e-4, 5.5e-5; 0 as 0, and numbers from 0.01 up as they are.
 */
export const RATE_TICK_JS = `(value) => {
  const v = Number(value);
  if (v === 0 || !Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 0.01) return String(Number(v.toPrecision(3)));
  const [mantissa, exponent] = v.toExponential(2).split('e');
  return String(Number(mantissa)) + 'e' + String(Number(exponent));
}`;
