import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import type { TrainEvent } from '../../../trainer/training/pipeline/events';
import { trainRepository } from '../../../trainer/training/pipeline/train-repository';
import { buildIdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makeTinyModel } from '../../fixtures/pipeline/tiny-model';
import { requireTorch } from './require-torch';

// `idiom train --backend torch`: the same pipeline (mining, packing, checkpoints, evaluation,
// registry) with PyTorch taking the steps, here over two processes (--processes 2, DDP over gloo);
// the adapter it writes is a valid PEFT adapter for the base.

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

describe('idiom train with the PyTorch backend', function () {
  this.timeout(240_000);
  let base: string;

  before(async function () {
    await requireTorch(this);
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-torch-pipeline-'));
  });
  after(() => base && fs.rmSync(base, { recursive: true, force: true }));

  it('trains over two processes, records torch and the processes, and writes an adapter that loads', async () => {
    const model = await makeTinyModel(path.join(base, 'model'));
    const repo = buildIdiomRepo(base);
    const events: TrainEvent[] = [];
    const result = await trainRepository({
      repo: repo.root,
      base: model.dir,
      backend: 'torch',
      budget: { tokens: 12_000 },
      threads: 2,
      batch: 2,
      processes: 2,
      force: true,
      onProgress: (event) => events.push(event),
    });
    assert.ok(
      events.some((e) => e.type === 'step'),
      'progress events arrive from the PyTorch steps',
    );
    const manifest = JSON.parse(fs.readFileSync(path.join(result.adapter.path, 'manifest.json'), 'utf8'));
    assert.equal(manifest.training.backend, 'torch');
    assert.equal(manifest.training.hyperparameters.processes, 2);
    assert.equal(manifest.training.hyperparameters.batch, 2);
    const { config, sha256 } = await loadCheckpoint(model.dir);
    const loaded = await loadAdapter(result.adapter.path, config, { baseSha256: sha256 });
    assert.ok(loaded.modules.size > 0);
    assert.ok(Number.isFinite(result.metrics.adapter!.loss));
  });

  it('refuses --processes with one line on ONNX Runtime and below 1, before mining anything', () => {
    const repo = buildIdiomRepo(path.join(base, 'refused'));
    for (const [args, message] of [
      [
        ['--backend', 'ort', '--processes', '2'],
        /^idiom: --processes 2 needs the PyTorch backend \(--backend torch\); ONNX Runtime trains in one process$/,
      ],
      [['--backend', 'torch', '--processes', '0'], /--processes must be a positive integer, got "0"/],
    ] as const) {
      const run = spawnSync(process.execPath, [bin, 'train', repo.root, ...args], { encoding: 'utf8' });
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stderr.trim(), message);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.equal(fs.existsSync(path.join(repo.root, '.idiom')), false, 'nothing written');
    }
  });
});
