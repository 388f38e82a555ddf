import * as fs from 'node:fs';
import * as path from 'node:path';
import { labelWithAge } from '../../adapters/label';
import type { AdapterEntry } from '../../adapters/registry';
import { Registry, registryLocation } from '../../adapters/registry';
import { readDriftReadings, type DriftReading } from '../../adapters/drift-log';
import { BASE_KEY, readStats, type Acceptance, type StatsSummary } from '../../adapters/stats';
import { chartJsSource, escapeHtml, scriptJson } from './page';

// The adapters report: every adapter version of a repository in the order it was trained, with
// its held-out loss against the base, the replay benchmark (accepted characters of held-out lines
// replayed through the server), its drift as HEAD moved (.idiom/drift.jsonl) and what users did
// with its suggestions (.idiom/stats.jsonl).
// One self-contained page (Chart.js inlined), as `idiom adapters report` writes it and the
// extension's Show adapter history shows it.

/** One adapter version as the page shows it. */
export interface TimelineRow {
  id: string;
  label: string;
  created: string;
  mode: string;
  active: boolean;
  parent: string | null;
  /** Held-out loss of base + adapter, and of the base on the same split (nats/token). */
  loss: number | null;
  baseLoss: number | null;
  /** Replay benchmark: share of the replayed lines' characters a user would accept, and what it was compared with. */
  replay: { acceptedCharShare: number; reference: string; referenceShare: number } | null;
  acceptance: Acceptance | null;
  /** The latest drift reading the language server took of it (.idiom/drift.jsonl). */
  drift: DriftReading | null;
  problem?: string;
}

export function timelineRows(
  entries: AdapterEntry[],
  stats: StatsSummary,
  now: number = Date.now(),
  drift: readonly DriftReading[] = [],
): TimelineRow[] {
  return entries
    .slice()
    .sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id))
    .map((entry) => {
      const quality = entry.metrics?.quality;
      return {
        id: entry.id,
        label: labelWithAge(entry.label ?? entry.id, entry.created, now),
        created: entry.created,
        mode: entry.mode,
        active: entry.active,
        parent: entry.parent,
        loss: entry.metrics?.adapter?.loss ?? null,
        baseLoss: entry.metrics?.base?.loss ?? null,
        replay: quality
          ? {
              acceptedCharShare: quality.candidate.acceptedCharShare,
              reference: quality.reference.name,
              referenceShare: quality.reference.score.acceptedCharShare,
            }
          : null,
        acceptance: stats.byAdapter.get(entry.id) ?? null,
        drift: drift.filter((reading) => reading.adapter === entry.id).at(-1) ?? null,
        ...(entry.problem ? { problem: entry.problem } : {}),
      };
    });
}

/** Held-out loss relative to the base: -0.12 is 12% lower; null without both. */
export function relativeLoss(loss: number | null, baseLoss: number | null): number | null {
  return loss !== null && baseLoss !== null && baseLoss > 0 ? loss / baseLoss - 1 : null;
}

const percent = (x: number | null, digits = 1) => (x === null ? '—' : `${(100 * x).toFixed(digits)}%`);
const signedPercent = (x: number | null) => (x === null ? '—' : `${x > 0 ? '+' : ''}${(100 * x).toFixed(1)}%`);

function driftCell(d: DriftReading | null): string {
  if (!d) return '<td>—</td>';
  const behind = d.commitsBehind === null ? '' : `${d.commitsBehind} commit${d.commitsBehind === 1 ? '' : 's'} behind`;
  const rise = d.lossIncrease === null ? '' : `${signedPercent(d.lossIncrease)} loss`;
  return `<td>${[behind, rise].filter(Boolean).join(', ') || '—'}${d.drifted ? ' ⚠' : ''}<br><small>${escapeHtml(d.at.slice(0, 16).replace('T', ' '))}</small></td>`;
}

function acceptanceCells(a: Acceptance | null): string {
  if (!a) return '<td>0</td><td>—</td><td>0</td><td>0</td><td>0</td>';
  return `<td>${a.shown}</td><td>${a.accepted} (${percent(a.rate)})</td><td>${a.partial}</td><td>${a.dismissed}</td><td>${a.acceptedChars}</td>`;
}

export function timelineHtml(input: {
  repo: string;
  rows: TimelineRow[];
  base: Acceptance | null;
  skippedStatsLines: number;
  /** Every drift reading, oldest first. */
  drift?: readonly DriftReading[];
}): string {
  const chart = chartJsSource();
  const rows = input.rows
    .map(
      (r) =>
        `<tr><td><b>${escapeHtml(r.label)}</b><br><code>${escapeHtml(r.id)}</code>${r.problem ? `<br>unusable: ${escapeHtml(r.problem)}` : ''}</td>` +
        `<td>${escapeHtml(r.mode)}${r.active ? ' · active' : ''}</td><td>${r.parent ? `<code>${escapeHtml(r.parent)}</code>` : '—'}</td>` +
        `<td>${r.loss === null ? '—' : r.loss.toFixed(4)}</td><td>${signedPercent(relativeLoss(r.loss, r.baseLoss))}</td>` +
        `<td>${r.replay ? `${percent(r.replay.acceptedCharShare)} (${escapeHtml(r.replay.reference)} ${percent(r.replay.referenceShare)})` : '—'}</td>` +
        `${driftCell(r.drift)}${acceptanceCells(r.acceptance)}</tr>`,
    )
    .join('\n');
  const baseRow = `<tr><td><b>base model alone</b></td><td></td><td></td><td></td><td></td><td></td><td></td>${acceptanceCells(input.base)}</tr>`;
  const labelOf = new Map(input.rows.map((r) => [r.id, r.label]));
  const driftData = (input.drift ?? []).map((d) => ({
    at: d.at.slice(0, 16).replace('T', ' '),
    adapter: labelOf.get(d.adapter) ?? d.adapter,
    lossIncrease: d.lossIncrease,
    commitsBehind: d.commitsBehind,
  }));
  const data = input.rows.map((r) => ({
    name: r.label,
    loss: r.loss,
    baseLoss: r.baseLoss,
    relative: relativeLoss(r.loss, r.baseLoss),
    replay: r.replay?.acceptedCharShare ?? null,
    replayReference: r.replay?.referenceShare ?? null,
    rate: r.acceptance?.rate ?? null,
    acceptedChars: r.acceptance?.acceptedChars ?? 0,
  }));
  const charts =
    chart && input.rows.length > 0
      ? `<div class="grid"><div class="chart"><canvas id="loss"></canvas></div><div class="chart"><canvas id="replay"></canvas></div>
<div class="chart"><canvas id="acceptance"></canvas></div><div class="chart"><canvas id="chars"></canvas></div>
${driftData.length > 0 ? '<div class="chart"><canvas id="drift"></canvas></div>' : ''}</div>
<script>${chart}</script>
<script>
const data = ${scriptJson(data)};
const labels = data.map(d => d.name);
const line = (id, title, datasets, y) => new Chart(document.getElementById(id), {
  type: 'line',
  data: { labels, datasets: datasets.map(([label, key, color]) => ({ label, data: data.map(d => d[key]), borderColor: color, backgroundColor: color, spanGaps: true })) },
  options: { animation: false, plugins: { title: { display: true, text: title } }, scales: { x: { ticks: { autoSkip: true, maxRotation: 30 } }, y } },
});
line('loss', 'held-out loss (nats/token, lower is better)', [['base + adapter', 'loss', '#2563eb'], ['base', 'baseLoss', '#94a3b8']], {});
line('replay', 'replay: accepted characters of held-out lines', [['this adapter', 'replay', '#16a34a'], ['what served before', 'replayReference', '#94a3b8']], { min: 0, max: 1, ticks: { format: { style: 'percent' } } });
line('acceptance', 'acceptance rate (accepted / shown)', [['acceptance', 'rate', '#9333ea']], { min: 0, max: 1, ticks: { format: { style: 'percent' } } });
const drift = ${scriptJson(driftData)};
if (drift.length > 0) new Chart(document.getElementById('drift'), { type: 'line',
  data: { labels: drift.map(d => d.at), datasets: [
    { label: 'loss rise against the base', data: drift.map(d => d.lossIncrease), borderColor: '#dc2626', backgroundColor: '#dc2626', yAxisID: 'y', spanGaps: true },
    { label: 'commits behind', data: drift.map(d => d.commitsBehind), borderColor: '#94a3b8', backgroundColor: '#94a3b8', yAxisID: 'commits', spanGaps: true } ] },
  options: { animation: false, plugins: { title: { display: true, text: 'drift of the serving adapter as HEAD moved' },
    tooltip: { callbacks: { afterLabel: (c) => drift[c.dataIndex].adapter } } },
    scales: { y: { ticks: { format: { style: 'percent' } } }, commits: { position: 'right', beginAtZero: true, grid: { drawOnChartArea: false } } } } });
new Chart(document.getElementById('chars'), { type: 'bar', data: { labels, datasets: [{ label: 'accepted characters', data: data.map(d => d.acceptedChars), backgroundColor: '#f59e0b' }] },
  options: { animation: false, plugins: { legend: { display: false }, title: { display: true, text: 'characters accepted by users' } }, scales: { y: { beginAtZero: true } } } });
</script>`
      : input.rows.length > 0
        ? '<p>(Charts need chart.js, which this installation does not ship; the numbers are in the table.)</p>'
        : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Idiom adapters over time</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; }
.wide { overflow-x: auto; } table { border-collapse: collapse; margin: 1em 0; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e5e7eb; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; overflow-wrap: anywhere; } code { font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em; } .chart { position: relative; height: 280px; }
</style></head><body>
<h1>Idiom adapters over time</h1>
<p>Repository <code>${escapeHtml(input.repo)}</code>: ${input.rows.length} adapter version${input.rows.length === 1 ? '' : 's'}, oldest first.
Held-out loss relative to the base on each adapter's own split; replay: held-out lines typed again through the language server;
drift: the language server's latest reading when HEAD moved (commits behind, held-out loss rise on the changed files against the base);
acceptance: what happened to the suggestions each version served in this workspace (local only, never sent anywhere)${input.skippedStatsLines > 0 ? `; ${input.skippedStatsLines} damaged line${input.skippedStatsLines === 1 ? '' : 's'} of stats.jsonl skipped` : ''}.</p>
${input.rows.length === 0 ? '<p>No adapters yet: train one with <code>idiom train</code> or Idiom: Retrain.</p>' : ''}
<div class="wide"><table><thead><tr><th>version</th><th>mode</th><th>parent</th><th>held-out loss</th><th>vs base</th><th>replay accepted chars</th><th>drift (latest)</th><th>shown</th><th>accepted (of shown)</th><th>partial</th><th>dismissed</th><th>accepted chars</th></tr></thead>
<tbody>
${rows}
${baseRow}
</tbody></table></div>
${charts}
</body></html>
`;
}

/** The page for the registry at `registryDir` (an empty one where it does not exist). */
export async function registryTimelineHtml(
  repoRoot: string,
  location?: string,
  now: number = Date.now(),
): Promise<string> {
  const dir = registryLocation(repoRoot, { location });
  const entries = fs.existsSync(dir) ? await (await Registry.open(repoRoot, { location, readOnly: true })).list() : [];
  const stats = readStats(dir);
  const { readings } = readDriftReadings(dir);
  return timelineHtml({
    repo: path.resolve(repoRoot),
    rows: timelineRows(entries, stats, now, readings),
    drift: readings,
    base: stats.byAdapter.get(BASE_KEY) ?? null,
    skippedStatsLines: stats.skipped,
  });
}
