import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAdapter, loraAdapterOf } from '../../../trainer/adapters/peft';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { Registry } from '../../../trainer/adapters/registry';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { ReviewScorer } from '../../../trainer/modes/review/scorer';
import type { ReviewFileResult } from '../../../trainer/modes/review/review';
import { evaluateFixCommits } from '../../../trainer/modes/review/evaluate';
import { commitFiles } from '../../fixtures/mining/git-repo';
import { entityModule, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import type { TinyModel } from '../../fixtures/pipeline/tiny-model';
import { trainedIdiomRepo } from '../../fixtures/pipeline/trained-idiom-repo';

// Review on a real git repository written in one idiom, with a tiny model trained on it here (the
// real pipeline, a few seconds): a new file in the same idiom with one planted odd line gets that
// line flagged, the other lines mostly not; a change to a committed file reviews only the changed
// lines; the adapter's greedy alternative for the odd line is less surprising than the line.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
const PLANTED = '  while (Math.random() > 0.5) process.exit(JSON.stringify(globalThis) as never);';

function review(args: string[]): ReviewFileResult {
  const out = spawnSync(process.execPath, [bin, 'review', ...args, '--json', '--threads', '1'], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  assert.equal(out.status, 0, out.stderr);
  return JSON.parse(out.stdout) as ReviewFileResult;
}

describe('idiom review: a planted odd line in a repository with one idiom', function () {
  this.timeout(180_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let widgetText: string;
  let plantedLine: number;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-review-'));
    ({ model, repo } = await trainedIdiomRepo(base, {
      budget: { tokens: 100_000 },
      batch: 4,
      maxEpochs: 30,
      heldOut: { maxLines: 8 },
      // Trained hard on purpose (its lines must stand out); the memorisation check has its own test.
      memorisation: false,
    }));
    const lines = entityModule('widget').split('\n');
    plantedLine = lines.findIndex((l) => l.includes('repo.put(renamed)')) + 1;
    lines[plantedLine - 1] = PLANTED;
    widgetText = lines.join('\n');
    fs.writeFileSync(path.join(repo.root, 'src', 'widget.ts'), widgetText);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  // The mean aggregate: with a model this small every first use of a new name (widget, Widget) is
  // near-maximally surprising, so the max aggregate (the default, chosen on real fix commits)
  // ranks the lines that introduce the new entity's names above the odd line here.
  it('flags the planted line (a new, untracked file: every line is new) and it is the most surprising one', () => {
    const result = review([path.join(repo.root, 'src', 'widget.ts'), '--base', model.dir, '--aggregate', 'mean']);
    assert.equal(result.aggregate, 'mean');
    assert.equal(result.scope, 'changed');
    assert.equal(result.adapter?.source, 'complete');
    const planted = result.lines.find((l) => l.line === plantedLine)!;
    assert.ok(planted, 'the planted line was reviewed');
    assert.equal(planted.flagged, true, `planted line ${planted.surprisal} bits vs threshold ${result.threshold}`);
    const top = [...result.lines].sort((a, b) => b.surprisal - a.surprisal)[0];
    assert.equal(top.line, plantedLine);
    const others = result.lines.filter((l) => l.flagged && l.line !== plantedLine);
    assert.ok(others.length <= 2, `other flagged lines: ${JSON.stringify(others)}`);
    assert.ok(result.distribution.lines > 100);
    for (const line of result.lines) {
      assert.deepEqual(Object.keys(line).sort(), ['baseSurprisal', 'flagged', 'line', 'surprisal', 'text']);
      assert.ok(
        line.baseSurprisal! > line.surprisal,
        `the adapter knows this idiom better than the base (line ${line.line})`,
      );
    }
    // The repository distribution is cached per adapter in the registry folder.
    assert.ok(fs.existsSync(path.join(repo.root, '.idiom', 'review', `${result.adapter!.id}.json`)));
  });

  it('reviews only the lines changed since HEAD in a committed file, the whole file with --all', () => {
    const file = path.join(repo.root, 'src', 'order.ts');
    const original = fs.readFileSync(file, 'utf8');
    const lines = original.split('\n');
    const changed = lines.findIndex((l) => l.includes('repo.delete(id)')) + 1;
    lines[changed - 1] = '  repo.delete(id); // removed';
    fs.writeFileSync(file, lines.join('\n'));
    try {
      const result = review([file, '--base', model.dir]);
      assert.equal(result.aggregate, 'max');
      assert.deepEqual(
        result.lines.map((l) => l.line),
        [changed],
      );
      const all = review([file, '--base', model.dir, '--all']);
      assert.equal(all.scope, 'all');
      assert.equal(all.lines.length, lines.filter((l) => /\S/.test(l)).length);
      assert.equal(all.threshold, result.threshold, 'the cached distribution gives the same threshold');
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  it("the adapter's greedy alternative for the odd line is one line, and less surprising than the odd line", async () => {
    const registry = await Registry.open(repo.root);
    const checkpoint = await loadCheckpoint(model.dir);
    const adapter = loraAdapterOf(
      await loadAdapter((await registry.activePath('complete'))!, checkpoint.config, { baseSha256: checkpoint.sha256 }),
    );
    const worker = EngineWorker.start();
    try {
      const scorer = await ReviewScorer.load(worker, model.dir, model.tokenizer, { threads: 1 });
      await scorer.setAdapter(adapter);
      const alternative = await scorer.alternative(widgetText, plantedLine);
      assert.ok(alternative.trim().length > 0 && !alternative.includes('\n'), JSON.stringify(alternative));
      assert.notEqual(alternative, PLANTED);
      const lines = widgetText.split('\n');
      lines[plantedLine - 1] = alternative;
      const before = await scorer.fileSurprisal(widgetText); // mean, as the planted-line test
      const after = await scorer.fileSurprisal(lines.join('\n'));
      assert.ok(
        after.adapter.mean[plantedLine - 1] < before.adapter.mean[plantedLine - 1],
        `${JSON.stringify(alternative)}: ${after.adapter.mean[plantedLine - 1]} vs ${before.adapter.mean[plantedLine - 1]}`,
      );
      await scorer.dispose();
    } finally {
      await worker.terminate();
    }
  });

  it('--eval-fixes: a later fix commit that removes the odd line ranks it first (AUC 1); commits the adapter trained on are left out', async () => {
    commitFiles(repo.root, '2025-01-01T10:00:00Z', 'add widget', { 'src/widget.ts': widgetText });
    commitFiles(repo.root, '2025-01-02T10:00:00Z', 'fix: widget rename stores the renamed widget', {
      'src/widget.ts': entityModule('widget'),
    });
    const result = await evaluateFixCommits({ repo: repo.root, base: model.dir, threads: 1 });
    assert.deepEqual(result.commits, { matched: 1, afterTraining: 1, evaluated: 1 });
    assert.equal(result.lines.removedByFix, 1);
    assert.equal(result.lines.other, widgetText.split('\n').filter((l) => /\S/.test(l)).length - 1);
    assert.equal(result.auc.adapter.mean, 1, JSON.stringify(result.auc));
    assert.equal(result.perFileAuc.files, 1);
    // Trained on HEAD: nothing left to evaluate without leakage.
    await assert.rejects(
      evaluateFixCommits({ repo: repo.root, base: model.dir, threads: 1, fixesAfter: 'HEAD' }),
      /no fix commits to evaluate \(1 match .*none after the adapter's training commit/,
    );
  });

  it('one-line errors: a missing file, a file outside git without --all', () => {
    const missing = spawnSync(process.execPath, [bin, 'review', path.join(repo.root, 'nope.ts'), '--base', model.dir], {
      encoding: 'utf8',
    });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^idiom: .*nope\.ts: no such file\n$/);
    const outside = path.join(base, 'loose.ts');
    fs.writeFileSync(outside, 'const a = 1;\n');
    const loose = spawnSync(process.execPath, [bin, 'review', outside, '--base', model.dir], { encoding: 'utf8' });
    assert.equal(loose.status, 1);
    assert.match(loose.stderr, /^idiom: .*loose\.ts: not inside a git repository/);
  });
});
