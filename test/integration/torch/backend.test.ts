import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../../../trainer/model/random';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import type { HostTensor } from '../../../trainer/model/tensor';
import { createStepTrainer, selectTrainingBackend } from '../../../trainer/training/backend';
import { probeTorch } from '../../../trainer/training/torch-bridge/python';
import { TorchTrainer } from '../../../trainer/training/torch-bridge/torch-trainer';
import type { TrainingOptions } from '../../../trainer/training/ort/trainer';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { requireTorch } from './require-torch';

// Choosing the engine (--backend auto|ort|torch) against real interpreters: a missing one, one
// without PyTorch (python3 -S: no site-packages), one that hangs, and the machine's own; then the
// PyTorch step server's behaviour a training loop relies on (resume, bad input, a diverging step).

const config = tinyModelConfig({
  model_type: 'qwen2',
  hidden_size: 32,
  intermediate_size: 48,
  vocab_size: 64,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
});
const source = { random: { config, seed: 1, std: 0.05 } };
const options: TrainingOptions = {
  trainable: { method: 'lora', lora: { targets: ['q_proj', 'v_proj', 'down_proj'], r: 4, alpha: 8 } },
  batch: 2,
  seqLen: 16,
  threads: 1,
  optimizer: { weightDecay: 0.01 },
};

function batches(count: number): Int32Array[] {
  const rng = new Rng(4);
  return Array.from({ length: count }, () =>
    Int32Array.from({ length: 2 * 17 }, (_, i) => (rng.next() < 0.1 ? rng.int(64) : (i * 3) % 64)),
  );
}

describe('training backend selection', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-backend-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function script(name: string, body: string): string {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return file;
  }

  it('ort never probes Python', async () => {
    const selection = await selectTrainingBackend('ort', { probe: () => Promise.reject(new Error('must not probe')) });
    assert.deepEqual(selection, { backend: 'ort', device: 'cpu', message: null });
  });

  it('torch without a Python falls back to ONNX Runtime with one line saying why', async () => {
    const selection = await selectTrainingBackend('torch', { python: path.join(dir, 'no-such-python3') });
    assert.equal(selection.backend, 'ort');
    assert.match(
      selection.message!,
      /^PyTorch backend unavailable \(.*no-such-python3: not found \(install Python 3\)\); training with ONNX Runtime on the CPU$/,
    );
  });

  it('torch with a Python that has no PyTorch falls back, naming the import error', async () => {
    const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
    const bare = script('python-without-site', `exec ${python} -S "$@"`);
    const selection = await selectTrainingBackend('torch', { python: bare });
    assert.equal(selection.backend, 'ort');
    assert.match(selection.message!, /has no PyTorch \(ModuleNotFoundError: No module named 'torch'\)/);
    assert.equal(selection.message!.includes('\n'), false);
  });

  it('a probe that hangs is cut off by its timeout', async () => {
    const slow = script('python-that-hangs', 'exec sleep 10');
    const started = Date.now();
    const selection = await selectTrainingBackend('torch', { python: slow, timeoutMs: 500 });
    assert.ok(Date.now() - started < 5000);
    assert.equal(selection.backend, 'ort');
    assert.match(selection.message!, /python-that-hangs: importing torch took longer than/);
  });

  it('auto picks PyTorch only when it sees CUDA; torch picks it whenever it imports', async () => {
    const probe = await probeTorch();
    const auto = await selectTrainingBackend('auto');
    assert.equal(auto.backend, probe.ok && probe.cuda ? 'torch' : 'ort');
    const forced = await selectTrainingBackend('torch');
    assert.equal(forced.backend, probe.ok ? 'torch' : 'ort');
    if (probe.ok) assert.equal(forced.device, probe.cuda ? forced.device : 'cpu');
  });
});

describe('PyTorch step server', function () {
  this.timeout(120_000);
  before(async function () {
    await requireTorch(this);
  });

  it('a run stopped and resumed from its adapter + AdamW state follows the uninterrupted one exactly', async () => {
    const data = batches(12);
    const lr = (i: number) => 1e-2 * Math.min(1, (i + 1) / 3);
    const straight = await TorchTrainer.create(source, options);
    const losses: number[] = [];
    for (let i = 0; i < data.length; i++) losses.push((await straight.step({ tokens: data[i] }, lr(i))).loss);
    const final = await straight.getTrainable();
    await straight.release();

    const first = await TorchTrainer.create(source, options);
    for (let i = 0; i < 5; i++) await first.step({ tokens: data[i] }, lr(i));
    const saved = { adapter: await first.getTrainable(), state: await first.getOptimizerState() };
    await first.release();
    assert.equal(saved.state.step, 5);

    const resumed = await TorchTrainer.create(source, { ...options, seed: 99 });
    await resumed.setTrainable(saved.adapter);
    await resumed.setOptimizerState(saved.state);
    const rest: number[] = [];
    for (let i = 5; i < data.length; i++) rest.push((await resumed.step({ tokens: data[i] }, lr(i))).loss);
    const after = await resumed.getTrainable();
    await resumed.release();
    assert.deepEqual(rest, losses.slice(5));
    for (const [name, tensor] of final)
      assert.deepEqual(
        Array.from(after.get(name)!.data as Float32Array),
        Array.from(tensor.data as Float32Array),
        name,
      );
  });

  it('bad input gets one line and the server keeps serving; a diverging step changes nothing', async () => {
    const trainer = await TorchTrainer.create(source, options);
    try {
      const [good] = batches(1);
      const outOfRange = Int32Array.from(good);
      outOfRange[3] = 64;
      await assert.rejects(
        trainer.step({ tokens: outOfRange }, 1e-3),
        /^Error: PyTorch backend: token id 64 out of range \[0, 64\)$/,
      );
      await assert.rejects(trainer.step({ tokens: good.subarray(0, 10) }, 1e-3), /batch has 10 tokens; expected 2×17/);
      const before = await trainer.getTrainable();
      const nanMask = new Float32Array(32).fill(1);
      nanMask[5] = Number.NaN;
      await assert.rejects(trainer.step({ tokens: good, lossMask: nanMask }, 1e-3), /training step 1 diverged/);
      const unchanged = await trainer.getTrainable();
      for (const [name, tensor] of before) assert.deepEqual(unchanged.get(name)!.data, tensor.data, name);
      const result = await trainer.step({ tokens: good }, 1e-3);
      assert.equal(result.step, 1);
      assert.ok(Number.isFinite(result.loss));
      await assert.rejects(
        trainer.setTrainable(
          new Map<string, HostTensor>([['nonsense', { dtype: 'float32', shape: [1], data: new Float32Array(1) }]]),
        ),
        /unexpected trainable tensor nonsense/,
      );
    } finally {
      await trainer.release();
    }
  });

  it('createStepTrainer opens the selected engine; both report the same first loss', async () => {
    const worker = EngineWorker.start();
    try {
      const [batch] = batches(1);
      const losses: number[] = [];
      const selections = [await selectTrainingBackend('ort'), await selectTrainingBackend('torch')];
      assert.deepEqual(
        selections.map((s) => s.backend),
        ['ort', 'torch'],
      );
      for (const selection of selections) {
        const trainer = await createStepTrainer(selection, worker, source, options);
        // 2 layers × r 4 × (in + out) of q_proj [32, 32], v_proj [16, 32], down_proj [32, 48]
        assert.equal(trainer.trainableParameters, 2 * 4 * (32 + 32 + (32 + 16) + (48 + 32)));
        losses.push((await trainer.step({ tokens: batch }, 1e-3)).loss);
        await trainer.release();
      }
      assert.ok(Math.abs(losses[0] - losses[1]) <= 1e-5 * losses[0], `${losses}`);
    } finally {
      await worker.terminate();
    }
  });
});
