import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import type { TrainEvent } from '../../../trainer/training/pipeline/events';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { probeTorch } from '../../../trainer/training/torch-bridge/python';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel } from '../../fixtures/pipeline/tiny-model';

// `idiom train --backend torch`: the same pipeline (mining, packing, checkpoints, evaluation,
// registry) with PyTorch taking the steps; the adapter it writes is a valid PEFT adapter for the base.

describe('idiom train with the PyTorch backend', function () {
  this.timeout(240_000);
  let base: string;

  before(async function () {
    const probe = await probeTorch();
    if (!probe.ok) {
      if (process.env.CI || process.env.IDIOM_REQUIRE_TORCH)
        throw new Error(`PyTorch is required here: ${probe.reason}`);
      this.skip();
    }
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-torch-pipeline-'));
  });
  after(() => base && fs.rmSync(base, { recursive: true, force: true }));

  it('trains, records torch as the backend, and writes an adapter that loads against the base', async () => {
    const model = await makeTinyModel(path.join(base, 'model'));
    const repo = buildIdiomRepo(base);
    const events: TrainEvent[] = [];
    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      backend: 'torch',
      budget: { tokens: 12_000 },
      threads: 1,
      force: true,
      onProgress: (event) => events.push(event),
    });
    assert.ok(
      events.some((e) => e.type === 'step'),
      'progress events arrive from the PyTorch steps',
    );
    const manifest = JSON.parse(fs.readFileSync(path.join(result.adapter.path, 'manifest.json'), 'utf8'));
    assert.equal(manifest.training.backend, 'torch');
    const { config, sha256 } = await loadCheckpoint(model.dir);
    const loaded = await loadAdapter(result.adapter.path, config, { baseSha256: sha256 });
    assert.ok(loaded.modules.size > 0);
    assert.ok(Number.isFinite(result.metrics.adapter!.loss));
  });
});
