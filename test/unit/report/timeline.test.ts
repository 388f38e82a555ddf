import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { appendDriftReading, DRIFT_FILE, readDriftReadings } from '../../../trainer/adapters/drift-log';
import type { AdapterEntry } from '../../../trainer/adapters/registry';
import { statsLine, summarizeStats, type StatsEvent } from '../../../trainer/adapters/stats';
import { trainingReportHtml } from '../../../trainer/training/report/html';
import { RATE_TICK_JS } from '../../../trainer/training/report/page';
import { relativeLoss, timelineHtml, timelineRows } from '../../../trainer/training/report/timeline';

// The adapters page (loss, replay and acceptance per version over time), and the training
// report's learning-rate axis and comparison table.

const metrics = (loss: number) => ({
  loss,
  perplexity: Math.exp(loss),
  bitsPerByte: loss,
  exactMatch: 0,
  editSimilarity: 0,
});
const score = (acceptedCharShare: number) => ({ shown: 0.5, exactMatch: 0.1, acceptedCharShare, precision: 0.5 });

function entry(id: string, created: string, loss: number, extra: Partial<AdapterEntry> = {}): AdapterEntry {
  return {
    id,
    created,
    mode: 'complete',
    active: false,
    activeModes: [],
    path: `/registry/adapters/${id}`,
    kind: 'lora',
    parent: null,
    base: null,
    metrics: { base: metrics(2), adapter: metrics(loss) },
    label: `LoRA r16 · ${id.slice(-6, -1)}`,
    training: null,
    ...extra,
  };
}

describe('report: adapters over time', () => {
  const older = entry('20260101-000000-aaaaaa', '2026-01-01T00:00:00.000Z', 1.5);
  const newer = entry('20260102-000000-bbbbbb', '2026-01-02T00:00:00.000Z', 1.8, {
    active: true,
    parent: older.id,
    label: 'LoRA r16 · <b>',
    metrics: {
      base: metrics(2),
      adapter: metrics(1.8),
      quality: {
        lines: 10,
        points: 20,
        seed: 1,
        candidate: score(0.4),
        reference: { name: 'base', score: score(0.25) },
      },
    },
  });
  const event = (kind: StatsEvent['event'], adapter: string | null, chars = 0) =>
    statsLine({ at: '2026-01-03T00:00:00.000Z', event: kind, adapter, mode: 'complete', chars });
  const stats = summarizeStats(
    [
      event('shown', newer.id),
      event('shown', newer.id),
      event('shown', newer.id),
      event('accepted', newer.id, 21),
      '{"torn',
      event('shown', null),
    ].join('\n'),
  );
  const now = Date.parse('2026-01-03T00:00:00.000Z');

  it('one row per version, oldest first, with loss vs base, replay and acceptance', () => {
    const rows = timelineRows([newer, older], stats, now);
    assert.deepEqual(
      rows.map((r) => r.id),
      [older.id, newer.id],
    );
    assert.equal(rows[0].label, `${older.label} · 2 d ago`);
    assert.equal(rows[1].acceptance?.rate, 1 / 3);
    assert.equal(rows[0].acceptance, null);
    assert.deepEqual(rows[1].replay, { acceptedCharShare: 0.4, reference: 'base', referenceShare: 0.25 });
    assert.equal(relativeLoss(1.5, 2), 1.5 / 2 - 1);
    assert.equal(relativeLoss(1.5, null), null);

    const html = timelineHtml({
      repo: '/r',
      rows,
      base: stats.byAdapter.get('base') ?? null,
      skippedStatsLines: stats.skipped,
    });
    assert.match(html, /new Chart\(/);
    assert.ok(!/<script src=/.test(html), 'nothing is loaded from elsewhere');
    assert.ok(html.includes('LoRA r16 · &lt;b&gt;') && !html.includes('<b>LoRA r16 · <b>'), 'labels are escaped');
    const vsBase = `${(100 * relativeLoss(1.8, 2)!).toFixed(1)}%`;
    assert.ok(html.includes(vsBase), vsBase);
    assert.ok(html.includes(`1 (${((100 * 1) / 3).toFixed(1)}%)`), 'accepted of shown');
    assert.ok(html.includes('<td>21</td>'), 'accepted characters');
    assert.match(html, /1 damaged line of stats\.jsonl skipped/);
    const data = JSON.parse(/const data = (.*);\n/.exec(html)![1]) as { name: string; rate: number | null }[];
    assert.deepEqual(
      data.map((d) => d.rate),
      [null, 1 / 3],
    );
  });

  it('drift readings: the latest per version in the table, every one in the chart; damaged lines skipped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-drift-log-'));
    try {
      const reading = (adapter: string, at: string, commitsBehind: number, lossIncrease: number) => ({
        at,
        adapter,
        head: 'f'.repeat(40),
        commitsBehind,
        lossIncrease,
        drifted: lossIncrease > 0.05,
      });
      appendDriftReading(dir, reading(newer.id, '2026-01-02T10:00:00.000Z', 1, 0.01));
      fs.appendFileSync(path.join(dir, DRIFT_FILE), '{"torn');
      appendDriftReading(dir, reading(newer.id, '2026-01-02T12:00:00.000Z', 3, 0.09));
      const { readings, skipped } = readDriftReadings(dir);
      assert.equal(skipped, 1);
      assert.deepEqual(
        readings.map((r) => r.commitsBehind),
        [1, 3],
      );
      const rows = timelineRows([newer, older], stats, now, readings);
      assert.equal(rows[0].drift, null);
      assert.equal(rows[1].drift?.commitsBehind, 3);
      const html = timelineHtml({ repo: '/r', rows, base: null, skippedStatsLines: 0, drift: readings });
      assert.ok(html.includes(`3 commits behind, +${(100 * 0.09).toFixed(1)}% loss ⚠`));
      const drift = JSON.parse(/const drift = (.*);\n/.exec(html)![1]) as { lossIncrease: number }[];
      assert.deepEqual(
        drift.map((d) => d.lossIncrease),
        [0.01, 0.09],
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an empty registry is a page that says so', () => {
    const html = timelineHtml({ repo: '/r', rows: [], base: null, skippedStatsLines: 0 });
    assert.match(html, /No adapters yet/);
    assert.ok(!html.includes('new Chart('));
  });
});

describe('report: the training report reads like a person writes it', () => {
  it('writes learning rates as 3e-4 and 5.5e-5 on its axis', () => {
    const tick = vm.runInNewContext(RATE_TICK_JS) as (value: number) => string;
    assert.equal(tick(3e-4), '3e-4');
    assert.equal(tick(5.5e-5), '5.5e-5');
    assert.equal(tick(0.000125), '1.25e-4');
    assert.equal(tick(0), '0');
    assert.equal(tick(0.5), '0.5');
    const html = trainingReportHtml({
      adapterId: '20260101-000000-aaaaaa',
      method: 'lora',
      created: '2026-01-01T00:00:00Z',
      repo: { root: '/r', head: 'abc' },
      base: { name: 'tiny', sha256: 'f'.repeat(64) },
      losses: [{ step: 1, loss: 3, learningRate: 5.5e-5, tokens: 10, seconds: 1 }],
      rows: [],
      heldOut: { commits: 1, lines: 1, completedLines: 1, tokens: 1 },
      promotion: 'x',
      activated: false,
      plan: {},
    });
    assert.ok(html.includes(`ticks: { callback: ${RATE_TICK_JS} }`), 'the learning-rate axis uses the tick format');
    // The comparison table wraps its long model names instead of running off the page.
    assert.match(html, /<div class="wide"><table>/);
    assert.match(html, /\.wide td:first-child \{ overflow-wrap: anywhere/);
  });
});
