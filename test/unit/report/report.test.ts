import { strict as assert } from 'node:assert';
import type { ComparisonRow } from '../../../trainer/training/report/compare';
import { trainingReportHtml } from '../../../trainer/training/report/html';
import { formatBytes, formatComparisonTable } from '../../../trainer/training/report/table';

const metrics = (loss: number) => ({
  loss,
  perplexity: Math.exp(loss),
  bitsPerByte: loss / Math.LN2 / 3,
  exactMatch: 0.25,
  editSimilarity: 0.5,
});
const row = (
  name: string,
  method: ComparisonRow['method'],
  loss: number,
  extra: Partial<ComparisonRow> = {},
): ComparisonRow => ({
  name,
  method,
  id: method === 'base' ? null : `20260101-000000-${method === 'lora' ? 'aaaaaa' : 'bbbbbb'}`,
  metrics: metrics(loss),
  source: 'this split',
  trainableParameters: null,
  fileBytes: null,
  seconds: null,
  peakRssBytes: null,
  steps: null,
  tokens: null,
  ...extra,
});

describe('report: comparison table and HTML', () => {
  const rows = [
    row('base', 'base', 2.5),
    row('LoRA (this run)', 'lora', 1.75, {
      trainableParameters: 1_234_567,
      fileBytes: 5 * 1024 * 1024,
      seconds: 90,
      peakRssBytes: 2 ** 30,
    }),
    row('full <script>', 'full', 1.5, {
      trainableParameters: 50_000_000,
      fileBytes: 200 * 1024 * 1024,
      seconds: 300,
      peakRssBytes: 3 * 2 ** 30,
    }),
  ];

  it('prints one aligned line per model with the numbers that differ between LoRA and full', () => {
    const table = formatComparisonTable(rows).split('\n').filter(Boolean);
    assert.equal(table.length, 2 + rows.length);
    assert.ok(new Set(table.map((l) => l.length)).size === 1, 'aligned');
    assert.match(table[3], /1\.7500 .* 25\.0% .* 1\.23M .* 5\.00 MiB .* 1\.50 .* 1\.00 GiB/);
    assert.match(table[4], /50\.00M .* 200\.0 MiB .* 5\.00 .* 3\.00 GiB/);
    assert.equal(formatBytes(512), '512 B');
  });

  it('writes one self-contained HTML file: Chart.js inlined, data as JSON, text escaped', () => {
    const html = trainingReportHtml({
      adapterId: '20260101-000000-aaaaaa',
      method: 'lora',
      created: '2026-01-01T00:00:00Z',
      repo: { root: '/r', head: 'abc' },
      base: { name: 'tiny', sha256: 'f'.repeat(64) },
      losses: Array.from({ length: 5000 }, (_, i) => ({
        step: i + 1,
        loss: 3 - i / 5000,
        learningRate: 1e-3,
        tokens: i * 10,
        seconds: i,
      })),
      rows,
      heldOut: { commits: 2, lines: 40, completedLines: 12, tokens: 900 },
      promotion: 'beats </script> base',
      activated: true,
      plan: { r: 16 },
    });
    assert.match(html, /new Chart\(/);
    assert.ok(html.length > 100_000, 'the chart library is inside the file');
    assert.ok(!/<script src=/.test(html), 'nothing is loaded from elsewhere');
    assert.ok(html.includes('full &lt;script&gt;') && html.includes('beats &lt;/script&gt; base'));
    const data = JSON.parse(/const data = (.*);\n/.exec(html)![1]) as { losses: unknown[]; models: { name: string }[] };
    assert.ok(data.losses.length <= 2001, 'long curves are thinned');
    assert.deepEqual(
      data.models.map((m) => m.name),
      ['base', 'LoRA (this run)', 'full <script>'],
    );
  });

  it('states what the budget bought: steps, trained tokens, time and peak memory', () => {
    const input = {
      adapterId: '20260101-000000-aaaaaa',
      method: 'lora' as const,
      created: '2026-01-01T00:00:00Z',
      repo: { root: '/r', head: 'abc' },
      base: { name: 'tiny', sha256: 'f'.repeat(64) },
      losses: [],
      heldOut: { commits: 2, lines: 40, completedLines: 12, tokens: 900 },
      promotion: 'beats base',
      activated: true,
      plan: { budget: '1024 tokens' },
    };
    const trained = row('LoRA (this run)', 'lora', 1.75, {
      seconds: 48.2,
      peakRssBytes: 3 * 2 ** 30,
      steps: 16,
      tokens: 424,
    });
    const html = trainingReportHtml({ ...input, rows: [row('base', 'base', 2.5), trained] });
    assert.ok(
      html.includes(
        `The budget of 1024 tokens bought 16 steps and 424 trained tokens in 48 s, at a peak RSS of ${formatBytes(3 * 2 ** 30)}.`,
      ),
    );
    const untrained = trainingReportHtml({ ...input, rows: [row('base', 'base', 2.5)] });
    assert.ok(!untrained.includes('bought'));
  });
});
