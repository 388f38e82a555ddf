import { readDriftReadings } from '../../../trainer/adapters/drift-log';
import { registryTimelineHtml } from '../../../trainer/training/report/timeline';
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StatusResult } from '../../../server/protocol';
import { tempDir } from '../../fixtures/mining/git-repo';
import type { IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { commitRenamedApi } from '../../fixtures/pipeline/renamed-api';
import type { TinyModel } from '../../fixtures/pipeline/tiny-model';
import { trainedIdiomRepo } from '../../fixtures/pipeline/trained-idiom-repo';
import {
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  waitFor,
  waitForModel,
  type Session,
} from './session';

// The drift watch in the real server over stdio: it scores the serving adapter once it loads (at
// its own commit: nothing to report), notices HEAD moving when the fixture's API is renamed in two
// commits, and sends a status whose drift names the commits and the loss rise; completions go on.

describe('language server: drift watch', function () {
  this.timeout(120_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let adapterId: string;
  let session: Session | null = null;

  before(async () => {
    base = tempDir('drift-server');
    const fixture = await trainedIdiomRepo(base, {
      budget: { tokens: 150_000 },
      maxEpochs: 40,
      heldOut: { maxLines: 4 },
      quality: false,
    });
    ({ model, repo } = fixture);
    adapterId = fixture.trained.adapter.id;
  });
  after(async () => {
    if (session) await stopServer(session);
    fs.rmSync(base, { recursive: true, force: true });
  });

  const driftOf = (s: Session, behind: number) => () =>
    [...s.statuses].reverse().find((status: StatusResult) => status.drift?.commitsBehind === behind)?.drift ??
    undefined;

  it('reports nothing at the adapter commit, then the renamed API as drift when HEAD moves', async () => {
    session = await startServer(repo.root, { settings: { baseModelPath: model.dir } });
    const ready = await waitForModel(session);
    assert.equal(ready.adapter?.id, adapterId);
    const atCommit = await waitFor('the first drift check', driftOf(session, 0), 20_000);
    assert.equal(atCommit.adapterId, adapterId);
    assert.equal(atCommit.drifted, false);

    commitRenamedApi(repo.root);
    const drift = await waitFor('a drift status after HEAD moved', driftOf(session, 2), 30_000);
    assert.equal(drift.adapterId, adapterId);
    assert.ok(drift.loss !== null && drift.trainingLoss !== null && drift.tokens > 0);
    assert.ok(drift.lossIncrease! >= drift.thresholds.lossIncrease, `loss rose by ${drift.lossIncrease}`);
    assert.equal(drift.drifted, true);
    assert.match(drift.message, /^2 commits behind, \+\d+% loss$/);

    // The reading is kept for the adapters report, as measured.
    const kept = await waitFor('the reading in drift.jsonl', () => {
      const readings = readDriftReadings(path.join(repo.root, '.idiom')).readings;
      return readings.find((reading) => reading.commitsBehind === 2);
    });
    assert.equal(kept.adapter, adapterId);
    assert.equal(kept.lossIncrease, drift.lossIncrease);
    assert.equal(kept.drifted, true);
    const page = await registryTimelineHtml(repo.root);
    assert.ok(page.includes(`2 commits behind, +${(100 * drift.lossIncrease!).toFixed(1)}% loss`), 'the page shows it');

    // Serving goes on.
    const uri = openDocument(session, path.join(repo.root, 'src', 'new.ts'), 'export function ');
    const answer = await inlineCompletion(session, uri, 0, 'export function '.length);
    assert.ok(answer === null || Array.isArray(answer.items));
  });
});
