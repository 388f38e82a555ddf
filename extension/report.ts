import type { AdapterSummary, HeldOutMetrics } from '../server/protocol';

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

type Metric = 'loss' | 'bitsPerByte' | 'exactMatch' | 'editSimilarity';

function metricRow(name: Metric, label: string, base: HeldOutMetrics | null, adapter: HeldOutMetrics | null): string {
  const cell = (metrics: HeldOutMetrics | null) => (metrics ? metrics[name].toFixed(4) : '—');
  return `<tr><td>${label}</td><td>${cell(base)}</td><td>${cell(adapter)}</td></tr>`;
}

/** A static page (no scripts) with the adapter's held-out metrics and how it was trained. */
export function trainingReportHtml(adapter: AdapterSummary, cspSource: string): string {
  const base = adapter.metrics?.base ?? null;
  const tuned = adapter.metrics?.adapter ?? null;
  const training = adapter.training;
  const rows = [
    metricRow('loss', 'loss (nats/token)', base, tuned),
    metricRow('bitsPerByte', 'bits per byte', base, tuned),
    metricRow('exactMatch', 'exact match', base, tuned),
    metricRow('editSimilarity', 'edit similarity', base, tuned),
  ].join('');
  const trainingRows = training
    ? Object.entries(training)
        .map(([key, value]) => `<tr><td>${escapeHtml(key)}</td><td>${escapeHtml(String(value))}</td></tr>`)
        .join('')
    : '<tr><td colspan="2">not recorded</td></tr>';
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${cspSource} 'unsafe-inline';">
<title>Idiom training report</title>
<style>body{font-family:var(--vscode-font-family);color:var(--vscode-foreground)}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid var(--vscode-panel-border);padding:4px 10px;text-align:left}</style>
</head><body>
<h1>Adapter ${escapeHtml(adapter.id)}</h1>
<p>mode ${escapeHtml(adapter.mode)} · created ${escapeHtml(adapter.created)} · ${adapter.active ? 'active' : 'inactive'} · parent ${escapeHtml(adapter.parent ?? 'none')}</p>
<h2>Held-out metrics</h2>
<table><tr><th>metric</th><th>base</th><th>base + adapter</th></tr>${rows}</table>
<h2>Training</h2>
<table>${trainingRows}</table>
<p>Files: ${escapeHtml(adapter.path)}</p>
</body></html>`;
}

/**
 * The pipeline's own HTML report (charts drawn by its inlined script) for a webview. It comes from
 * the repository's .idiom folder, so a Content-Security-Policy lets it run its inline script and
 * styles but load nothing and send nothing anywhere.
 */
export function pipelineReportHtml(html: string): string {
  const policy = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:;">`;
  const head = /<head[^>]*>/i.exec(html);
  return head ? html.replace(head[0], `${head[0]}${policy}`) : `${policy}${html}`;
}
