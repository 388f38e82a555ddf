import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeTextAtomically } from '../../adapters/folder';
import type { MemorisationMetrics, QualityComparison } from '../../adapters/manifest';
import type { ComparisonRow } from './compare';
import { memorisationHtml } from './memorisation-html';
import { RATE_TICK_JS, chartJsSource, escapeHtml, scriptJson } from './page';
import { TABLE_COLUMNS, formatBytes, rowCells } from './table';

// The HTML training report: the loss curve, held-out metrics per model and the comparison table,
// one self-contained file (Chart.js inlined, data as JSON), so it opens offline and in a webview.

/** One point of the loss curve: what the training loop records and the run folder keeps. */
export interface LossPoint {
  step: number;
  loss: number;
  learningRate: number;
  /** Targets trained so far. */
  tokens: number;
  /** Training seconds so far. */
  seconds: number;
}

export interface ReportInput {
  adapterId: string;
  method: 'lora' | 'full';
  created: string;
  repo: { root: string; head: string | null };
  base: { name: string; sha256: string };
  losses: LossPoint[];
  rows: ComparisonRow[];
  /** Held-out lines replayed through the language server (what a user sees), when it ran. */
  quality?: QualityComparison | null;
  /** Canary exposure and extraction (training/eval/memorisation.ts), when the check ran. */
  memorisation?: MemorisationMetrics | null;
  heldOut: { commits: number; lines: number; completedLines: number; tokens: number };
  /** [this adapter, its parent, …] when it continued another (`idiom train --from`). */
  lineage?: string[];
  promotion: string;
  activated: boolean;
  plan: Record<string, unknown>;
}

/** At most ~2000 points: long runs are thinned evenly (the last point kept). */
function thin(points: LossPoint[]): LossPoint[] {
  if (points.length <= 2000) return points;
  const stride = Math.ceil(points.length / 2000);
  const out = points.filter((_, i) => i % stride === 0);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

function qualityHtml(quality: QualityComparison | null): string {
  if (!quality) return '';
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const row = (name: string, score: QualityComparison['candidate']) =>
    `<tr><td>${escapeHtml(name)}</td><td>${pct(score.shown)}</td><td>${pct(score.exactMatch)}</td><td>${pct(score.acceptedCharShare)}</td><td>${pct(score.precision)}</td></tr>`;
  return `<h2>Replayed held-out lines</h2>
<p>${quality.lines} lines the held-out commits added, typed again at the start of their code and after their first token (${quality.points} points, seed ${quality.seed}), one inline completion each through the language server.</p>
<table><thead><tr><th>served</th><th>shown</th><th>exact line</th><th>accepted characters</th><th>precision</th></tr></thead><tbody>
${row('this adapter', quality.candidate)}${row(quality.reference.name, quality.reference.score)}</tbody></table>`;
}

/** What the budget bought: this run's steps, tokens, time and peak memory, from its comparison row. */
function budgetLine(input: ReportInput): string {
  const run = input.rows.find((r) => r.id === input.adapterId);
  if (!run || run.steps === null || run.tokens === null) return '';
  const budget = typeof input.plan.budget === 'string' ? `The budget of ${escapeHtml(input.plan.budget)}` : 'Training';
  const time = run.seconds === null ? '' : ` in ${run.seconds.toFixed(0)} s`;
  const memory = run.peakRssBytes === null ? '' : `, at a peak RSS of ${formatBytes(run.peakRssBytes)}`;
  return `${budget} bought ${run.steps} steps and ${run.tokens} trained tokens${time}${memory}.<br>\n`;
}

export function trainingReportHtml(input: ReportInput): string {
  const chart = chartJsSource();
  const table = [
    '<table><thead><tr>',
    ...TABLE_COLUMNS.map((c) => `<th>${escapeHtml(c)}</th>`),
    '</tr></thead><tbody>',
    ...input.rows.map(
      (row) =>
        `<tr>${rowCells(row)
          .map((cell) => `<td>${escapeHtml(cell)}</td>`)
          .join('')}</tr>`,
    ),
    '</tbody></table>',
  ].join('');
  const data = {
    losses: thin(input.losses).map((p) => ({ x: p.step, loss: p.loss, lr: p.learningRate })),
    models: input.rows.filter((r) => r.metrics).map((r) => ({ name: r.name, ...r.metrics })),
  };
  const plan = Object.entries(input.plan)
    .map(
      ([k, v]) =>
        `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === 'string' ? v : JSON.stringify(v))}</td></tr>`,
    )
    .join('');
  const charts = chart
    ? `<h2>Training loss</h2><div class="chart"><canvas id="loss"></canvas></div>
<h2>Held-out metrics</h2><div class="grid">
<div class="chart small"><canvas id="m-loss"></canvas></div><div class="chart small"><canvas id="m-bpb"></canvas></div>
<div class="chart small"><canvas id="m-exact"></canvas></div><div class="chart small"><canvas id="m-edit"></canvas></div></div>
<script>${chart}</script>
<script>
const data = ${scriptJson(data)};
new Chart(document.getElementById('loss'), {
  type: 'line',
  data: { datasets: [
    { label: 'training loss (nats/token)', data: data.losses.map(p => ({ x: p.x, y: p.loss })), borderColor: '#2563eb', pointRadius: 0, borderWidth: 1.5, yAxisID: 'y' },
    { label: 'learning rate', data: data.losses.map(p => ({ x: p.x, y: p.lr })), borderColor: '#f59e0b', pointRadius: 0, borderWidth: 1, yAxisID: 'lr' },
  ] },
  options: { animation: false, parsing: true, scales: { x: { type: 'linear', title: { display: true, text: 'step' } },
    y: { title: { display: true, text: 'loss' } }, lr: { position: 'right', grid: { drawOnChartArea: false }, ticks: { callback: ${RATE_TICK_JS} } } } },
});
const bars = (id, key, label, max) => new Chart(document.getElementById(id), {
  type: 'bar',
  data: { labels: data.models.map(m => m.name), datasets: [{ label, data: data.models.map(m => m[key]), backgroundColor: ['#94a3b8', '#2563eb', '#16a34a', '#dc2626', '#9333ea'] }] },
  options: { animation: false, plugins: { legend: { display: false }, title: { display: true, text: label } }, scales: { y: { beginAtZero: true, max } } },
});
bars('m-loss', 'loss', 'held-out loss (nats/token, lower is better)');
bars('m-bpb', 'bitsPerByte', 'bits per byte (lower is better)');
bars('m-exact', 'exactMatch', 'next-line exact match (higher is better)', 1);
bars('m-edit', 'editSimilarity', 'next-line edit similarity (higher is better)', 1);
</script>`
    : '<p>(Charts need chart.js, which this installation does not ship; the numbers are in the table.)</p>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Idiom training report ${escapeHtml(input.adapterId)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1f2937; }
table { border-collapse: collapse; margin: 1em 0; } th, td { padding: 4px 10px; border-bottom: 1px solid #e5e7eb; text-align: right; }
.wide { overflow-x: auto; } .wide table { width: 100%; font-size: 13px; } .wide th, .wide td { padding: 4px 6px; }
.wide td:first-child { overflow-wrap: anywhere; min-width: 9em; }
th:first-child, td:first-child { text-align: left; } .chart { position: relative; height: 320px; } .small { height: 240px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; } code { background: #f3f4f6; padding: 0 4px; }
</style></head><body>
<h1>Idiom training report</h1>
<p>Adapter <code>${escapeHtml(input.adapterId)}</code> (${input.method === 'lora' ? 'LoRA' : 'full fine-tuning'}), ${escapeHtml(input.created)}<br>
Repository <code>${escapeHtml(input.repo.root)}</code> at <code>${escapeHtml(input.repo.head ?? 'no commit')}</code><br>
Base <code>${escapeHtml(input.base.name)}</code> (sha256 ${escapeHtml(input.base.sha256.slice(0, 12))}…)<br>
${input.lineage && input.lineage.length > 1 ? `Continued from <code>${escapeHtml(input.lineage[1])}</code>; lineage ${input.lineage.map((id) => `<code>${escapeHtml(id)}</code>`).join(' ← ')}<br>\n` : ''}Held-out split: ${input.heldOut.commits} newest commits, ${input.heldOut.lines} changed lines (${input.heldOut.completedLines} completed greedily), ${input.heldOut.tokens} tokens scored.<br>
${budgetLine(input)}${input.activated ? 'Activated' : 'Not activated'}: ${escapeHtml(input.promotion)}</p>
<h2>Comparison</h2><div class="wide">${table}</div>
${qualityHtml(input.quality ?? null)}
${memorisationHtml(input.memorisation ?? null)}
${charts}
<h2>Training settings</h2><table>${plan}</table>
</body></html>
`;
}

/** Writes reports/<id>.html atomically; returns its path. */
export function writeTrainingReport(dir: string, input: ReportInput): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${input.adapterId}.html`);
  writeTextAtomically(file, trainingReportHtml(input));
  return file;
}
