import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { appendStatsEvent, STATS_FILE, type SuggestionEvent } from '../../../trainer/adapters/stats';
import { draftManifest, randomLoraTensors, tempDir, tinyConfig } from '../adapters/helpers';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function idiom(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe('idiom adapters (CLI)', function () {
  this.timeout(60_000);
  let repo: string;
  let ids: string[];
  before(async () => {
    repo = tempDir('cli-adapters');
    fs.mkdirSync(path.join(repo, '.git'));
    const registry = await Registry.open(repo);
    ids = [];
    for (const [second, loss] of [
      [1, 1.5],
      [2, 1.2],
    ] as const) {
      const staging = registry.stagingPath();
      await writeAdapter(staging, {
        config: { r: 2, alpha: 4, targets: ['q_proj'] },
        tensors: randomLoraTensors(tinyConfig, 2, ['q_proj'], second),
        manifest: draftManifest({
          created: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
          adapterLoss: loss,
        }),
        baseConfig: tinyConfig,
      });
      ids.push((await registry.add(staging)).id);
    }
  });
  after(() => fs.rmSync(repo, { recursive: true, force: true }));

  it('lists, activates, rolls back and removes, printing the JSON contract', () => {
    const list = idiom('adapters', 'list', '--repo', path.join(repo, '.idiom'), '--json');
    assert.equal(list.status, 0, list.stderr);
    const listed = JSON.parse(list.stdout);
    assert.deepEqual(
      listed.adapters.map((a: { id: string }) => a.id),
      ids,
    );
    for (const adapter of listed.adapters) {
      for (const key of ['id', 'created', 'active', 'mode', 'metrics']) assert.ok(key in adapter, key);
    }
    assert.equal(listed.adapters[1].metrics.adapter.loss, 1.2);

    assert.equal(idiom('adapters', 'activate', ids[0], '--repo', repo).status, 0);
    const activated = JSON.parse(idiom('adapters', 'activate', ids[1], '--repo', repo, '--json').stdout);
    assert.deepEqual(activated.change, { mode: 'complete', from: ids[0], to: ids[1], changed: true });
    assert.deepEqual(
      activated.adapters.map((a: { active: boolean }) => a.active),
      [false, true],
    );

    const rolled = JSON.parse(idiom('adapters', 'rollback', '--repo', repo, '--json').stdout);
    assert.deepEqual(rolled.change, { mode: 'complete', from: ids[1], to: ids[0], changed: true });

    const refused = idiom('adapters', 'remove', ids[0], '--repo', repo);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /^idiom: adapter .* is active for complete; .*\n$/);

    const removed = JSON.parse(idiom('adapters', 'remove', ids[1], '--repo', repo, '--json').stdout);
    assert.deepEqual(
      removed.adapters.map((a: { id: string }) => a.id),
      [ids[0]],
    );

    const table = idiom('adapters', '--repo', repo);
    assert.equal(table.status, 0);
    const manifest = draftManifest();
    const label = `LoRA r${manifest.training.hyperparameters.r} · ${manifest.repo.head!.slice(0, 7)}`;
    const vsBase = `${(100 * (1.5 / manifest.metrics.base!.loss - 1)).toFixed(1)}%`;
    assert.match(
      table.stdout,
      new RegExp(`^${ids[0]}\\s+${label} · \\d+ d ago\\s+complete\\s+complete\\s+1\\.5000\\s+${vsBase}\\s`, 'm'),
    );
  });

  it('shows acceptance per adapter from stats.jsonl, skipping damaged lines, and writes the report page', () => {
    const dir = path.join(repo, '.idiom');
    const event = (kind: SuggestionEvent, adapter: string | null, chars = 0) =>
      appendStatsEvent(dir, { at: new Date().toISOString(), event: kind, adapter, mode: 'complete', chars });
    event('shown', ids[0]);
    event('accepted', ids[0], 12);
    event('shown', ids[0]);
    fs.appendFileSync(path.join(dir, STATS_FILE), '{"at": "2026-01-01T00:00:00Z", "event": "acc'); // torn
    event('partial', ids[0], 5);
    event('shown', null);
    const listed = JSON.parse(idiom('adapters', '--repo', repo, '--json').stdout);
    const acceptance = listed.adapters.find((a: { id: string }) => a.id === ids[0]).acceptance;
    assert.deepEqual(acceptance, {
      shown: 2,
      accepted: 1,
      partial: 1,
      dismissed: 0,
      acceptedChars: 12 + 5,
      rate: 1 / 2,
    });
    assert.equal(listed.stats.base.shown, 1);
    assert.equal(listed.stats.skippedLines, 1);
    const table = idiom('adapters', '--repo', repo).stdout;
    assert.match(table, new RegExp(`^${ids[0]}\\s.*\\s2\\s+1 \\(50\\.0%\\)\\s+17$`, 'm'));
    assert.match(table, /1 damaged line/);

    const out = path.join(repo, 'page', 'adapters.html');
    const report = idiom('adapters', 'report', '--repo', repo, '--out', out, '--json');
    assert.equal(report.status, 0, report.stderr);
    assert.equal(JSON.parse(report.stdout).report, out);
    const html = fs.readFileSync(out, 'utf8');
    assert.ok(html.includes(ids[0]) && html.includes('1 (50.0%)'), 'the page has the adapter and its acceptance');
  });

  it('refuses bad input with one line and a non-zero status', () => {
    for (const args of [
      ['adapters', 'frobnicate'],
      ['adapters', 'activate'],
      ['adapters', 'list', '--mode', 'nope'],
      ['adapters', 'activate', 'not-an-id', '--repo', repo],
    ]) {
      const run = idiom(...args);
      assert.notEqual(run.status, 0, args.join(' '));
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    }
  });
});
