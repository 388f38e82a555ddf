import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StatusCommandResult } from '../../../trainer/cli/commands/status';
import { tempDir } from '../../fixtures/mining/git-repo';
import type { IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import type { TinyModel } from '../../fixtures/pipeline/tiny-model';
import { trainedIdiomRepo } from '../../fixtures/pipeline/trained-idiom-repo';
import { commitRenamedApi } from '../../fixtures/pipeline/renamed-api';

// Drift on a real repository: a tiny adapter learns the fixture's idiom, then later commits rename
// the API it uses everywhere. `idiom status --json` scores the changed files under base + adapter
// and reports the loss rise; with no new commits it reports nothing to retrain for.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

function status(repo: string, model: string, extra: string[] = []): StatusCommandResult {
  const out = spawnSync(process.execPath, [bin, 'status', '--repo', repo, '--base', model, '--json', ...extra], {
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, out.stderr);
  return JSON.parse(out.stdout) as StatusCommandResult;
}

describe('drift watch: idiom status on a repository whose API was renamed', function () {
  this.timeout(180_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let adapterId: string;

  before(async () => {
    base = tempDir('drift');
    const fixture = await trainedIdiomRepo(base, {
      budget: { tokens: 150_000 },
      maxEpochs: 40,
      heldOut: { maxLines: 4 },
      quality: false,
    });
    ({ model, repo } = fixture);
    adapterId = fixture.trained.adapter.id;
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('does not fire with no new commits', () => {
    const result = status(repo.root, model.dir);
    assert.equal(result.adapter, adapterId);
    const drift = result.drift!;
    assert.equal(drift.commitsBehind, 0);
    assert.equal(drift.tokens, 0);
    assert.equal(drift.loss, null);
    assert.equal(drift.drifted, false);
  });

  it('fires when later commits rename the API used everywhere, and names the loss rise', () => {
    const files = commitRenamedApi(repo.root);

    const drift = status(repo.root, model.dir).drift!;
    assert.equal(drift.commitsBehind, 2);
    assert.equal(drift.changedFiles, files);
    assert.ok(drift.tokens > 0 && drift.tokens <= 4096, `${drift.tokens} tokens scored`);
    assert.ok(
      drift.loss !== null && drift.baseLoss !== null && drift.trainingLoss !== null && drift.trainingBaseLoss !== null,
    );
    // The rise is the adapter's loss against the base's, now and at training.
    const rise = drift.loss / drift.baseLoss / (drift.trainingLoss / drift.trainingBaseLoss) - 1;
    assert.ok(Math.abs(rise - drift.lossIncrease!) < 1e-3, `${rise} vs ${drift.lossIncrease}`);
    assert.ok(Math.abs(drift.loss / drift.trainingLoss - 1 - drift.rawIncrease!) < 1e-3);
    // Two commits are well under the commit threshold: the loss alone fires the warning.
    assert.ok(drift.lossIncrease! >= drift.thresholds.lossIncrease, `loss rose by ${drift.lossIncrease}`);
    assert.equal(drift.drifted, true);
    assert.match(drift.message, new RegExp(`^2 commits behind, \\+${Math.round(drift.lossIncrease! * 100)}% loss$`));

    // The same repository under a threshold above the rise: no warning.
    const relaxed = status(repo.root, model.dir, ['--loss-increase', String(drift.lossIncrease! + 0.01)]).drift!;
    assert.equal(relaxed.drifted, false);
    assert.equal(relaxed.loss, drift.loss);
  });
});
