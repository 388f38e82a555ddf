import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import type { StatusCommandResult } from '../../../trainer/cli/commands/status';
import { commitFiles, tempDir } from '../../fixtures/mining/git-repo';
import { buildIdiomRepo, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';

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

/**
 * The fixture's API renamed in every file, as a team moving to another naming convention would:
 * the accessors, the error, the repository's methods and their parameters.
 */
function renameApi(text: string): string {
  const snake = (name: string) => name.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
  return text
    .replace(/NotFoundError/g, 'RecordMissingFault')
    .replace(/find(\w+)ById/g, (_, type: string) => `fetch_${snake(type)}_or_raise`)
    .replace(/list(\w+)sByOwner/g, (_, type: string) => `select_${snake(type)}_rows_for_holder`)
    .replace(/\b(rename|remove)([A-Z]\w+)\(/g, (_, verb: string, type: string) => `${verb}_${snake(type)}_row(`)
    .replace(/\bget\(/g, 'read_one(')
    .replace(/\ball\(\)/g, 'read_every()')
    .replace(/\bput\(/g, 'write_one(')
    .replace(/\bdelete\(/g, 'erase_one(')
    .replace(/\bownerId\b/g, 'holder_key')
    .replace(/\brepo\b/g, 'store')
    .replace(/\bRepository\b/g, 'RowStore');
}

describe('drift watch: idiom status on a repository whose API was renamed', function () {
  this.timeout(180_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let adapterId: string;

  before(async () => {
    base = tempDir('drift');
    model = await makeTinyModel(path.join(base, 'model'));
    repo = buildIdiomRepo(base);
    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      budget: { tokens: 150_000 },
      learningRate: 1e-2,
      maxEpochs: 40,
      threads: 1,
      seed: 1,
      heldOut: { maxLines: 4 },
      quality: false,
      report: false,
    });
    assert.equal(result.activated, true, result.promotion.reason);
    adapterId = result.adapter.id;
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
    const src = path.join(repo.root, 'src');
    const files = fs.readdirSync(src).filter((name) => name.endsWith('.ts'));
    const renamed = Object.fromEntries(
      files.map((name) => [`src/${name}`, renameApi(fs.readFileSync(path.join(src, name), 'utf8'))]),
    );
    const half = Math.ceil(files.length / 2);
    const entries = Object.entries(renamed);
    commitFiles(repo.root, '2024-06-01T10:00:00Z', 'rename the accessors', Object.fromEntries(entries.slice(0, half)));
    commitFiles(repo.root, '2024-06-02T10:00:00Z', 'rename the rest', Object.fromEntries(entries.slice(half)));

    const drift = status(repo.root, model.dir).drift!;
    assert.equal(drift.commitsBehind, 2);
    assert.equal(drift.changedFiles, files.length);
    assert.ok(drift.tokens > 0 && drift.tokens <= 4096, `${drift.tokens} tokens scored`);
    assert.ok(drift.loss !== null && drift.trainingLoss !== null);
    const rise = (drift.loss - drift.trainingLoss) / drift.trainingLoss;
    assert.ok(Math.abs(rise - drift.lossIncrease!) < 1e-4, `${rise} vs ${drift.lossIncrease}`);
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
