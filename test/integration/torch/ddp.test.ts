import { strict as assert } from 'node:assert';
import type { HostTensor } from '../../../trainer/model/tensor';
import { Rng } from '../../../trainer/model/random';
import type { TrainingOptions } from '../../../trainer/training/ort/trainer';
import { checkProcesses } from '../../../trainer/training/torch-bridge/processes';
import { TorchTrainer } from '../../../trainer/training/torch-bridge/torch-trainer';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { requireTorch } from './require-torch';

// The PyTorch step server over several local processes (idiom train --processes N): rank 0 is the
// server the pipeline talks to, the others follow it over gloo here. A step's rows are split
// across the ranks, so N must not change what is learnt: the same batches through one process and
// through two (3 rows: 2 and 1, the short shard padded) give the same losses, held-out losses and
// adapter up to float32 rounding (the bounds and why: test/integration/torch/standalone.test.ts).

const LOSS_TOLERANCE = 1e-6;
const ADAPTER_TOLERANCE = 1e-4;
const ROWS = 3;
const SEQ = 16;
const VOCAB = 64;

const config = tinyModelConfig({
  model_type: 'qwen2',
  hidden_size: 32,
  intermediate_size: 48,
  vocab_size: VOCAB,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
});
const source = { random: { config, seed: 1, std: 0.05 } };
const options: TrainingOptions = {
  trainable: { method: 'lora', lora: { targets: ['q_proj', 'v_proj', 'down_proj'], r: 4, alpha: 8 } },
  batch: ROWS,
  seqLen: SEQ,
  threads: 1,
  seed: 5,
  optimizer: { weightDecay: 0.01 },
};

/** Rows whose loss masks count different numbers of targets, so the ranks' token counts differ. */
function batches(count: number): { tokens: Int32Array; lossMask: Float32Array }[] {
  const rng = new Rng(4);
  return Array.from({ length: count }, () => ({
    tokens: Int32Array.from({ length: ROWS * (SEQ + 1) }, () => rng.int(VOCAB)),
    lossMask: Float32Array.from({ length: ROWS * SEQ }, (_, i) => (i % SEQ >= rng.int(SEQ) ? 1 : 0)),
  }));
}

function largestRelativeDifference(a: Map<string, HostTensor>, b: Map<string, HostTensor>): number {
  let largest = 0;
  let difference = 0;
  for (const [name, tensor] of a) {
    const ours = tensor.data as Float32Array;
    const theirs = b.get(name)!.data as Float32Array;
    for (let i = 0; i < ours.length; i++) {
      largest = Math.max(largest, Math.abs(ours[i]));
      difference = Math.max(difference, Math.abs(ours[i] - theirs[i]));
    }
  }
  assert.ok(largest > 0);
  return difference / largest;
}

describe('PyTorch step server over two processes (DDP, gloo)', function () {
  this.timeout(120_000);
  before(async function () {
    await requireTorch(this);
  });

  it('trains to the adapter one process gives on the same batches', async () => {
    const data = batches(6);
    const held = batches(7)[6];
    const lr = (i: number) => 1e-2 * Math.min(1, (i + 1) / 2);
    const runs = [];
    for (const processes of [1, 2]) {
      const trainer = await TorchTrainer.create(source, { ...options, processes });
      try {
        const steps = [];
        for (let i = 0; i < data.length; i++) steps.push(await trainer.step(data[i], lr(i)));
        runs.push({ steps, held: await trainer.evaluate(held), adapter: await trainer.getTrainable() });
      } finally {
        await trainer.release();
      }
    }
    const [one, two] = runs;
    for (let i = 0; i < data.length; i++) {
      assert.equal(two.steps[i].tokens, one.steps[i].tokens, `step ${i + 1}: targets counted`);
      const relative = Math.abs(two.steps[i].loss - one.steps[i].loss) / one.steps[i].loss;
      assert.ok(relative <= LOSS_TOLERANCE, `step ${i + 1}: loss ${two.steps[i].loss} vs ${one.steps[i].loss}`);
    }
    assert.equal(two.held.tokens, one.held.tokens);
    assert.ok(Math.abs(two.held.loss - one.held.loss) <= LOSS_TOLERANCE * one.held.loss, 'held-out loss');
    const relative = largestRelativeDifference(one.adapter, two.adapter);
    assert.ok(relative <= ADAPTER_TOLERANCE, `max |Δ| / max |w| = ${relative.toExponential(2)}`);
  });

  it('bad input gets one line and both ranks keep serving; resuming state reaches every rank', async () => {
    const [good, next] = batches(2);
    const trainer = await TorchTrainer.create(source, { ...options, processes: 2 });
    try {
      const outOfRange = Int32Array.from(good.tokens);
      outOfRange[ROWS * (SEQ + 1) - 1] = VOCAB; // in the second rank's rows
      await assert.rejects(
        trainer.step({ tokens: outOfRange, lossMask: good.lossMask }, 1e-3),
        /^Error: PyTorch backend: token id 64 out of range \[0, 64\)$/,
      );
      const first = await trainer.step(good, 1e-2);
      assert.equal(first.step, 1);
      const saved = { adapter: await trainer.getTrainable(), state: await trainer.getOptimizerState() };
      const expected = await trainer.step(next, 1e-2);
      // Back to the state after step 1 on both ranks: the same second step again.
      await trainer.setTrainable(saved.adapter);
      await trainer.setOptimizerState(saved.state);
      const again = await trainer.step(next, 1e-2);
      assert.equal(again.loss, expected.loss);
      assert.equal(again.gradNorm, expected.gradNorm);
    } finally {
      await trainer.release();
    }
    await assert.rejects(
      TorchTrainer.create(source, { ...options, batch: 1, processes: 2 }),
      /batch 1 has fewer rows than processes \(2\)/,
    );
  });

  it('--processes is refused with one line below 1 and above 1 on ONNX Runtime', () => {
    assert.equal(checkProcesses(undefined, 'ort'), 1);
    assert.equal(checkProcesses(1, 'ort'), 1);
    assert.equal(checkProcesses(4, 'torch'), 4);
    assert.throws(() => checkProcesses(0, 'torch'), /^Error: --processes must be a positive integer, got 0$/);
    assert.throws(() => checkProcesses(1.5, 'torch'), /positive integer, got 1.5/);
    assert.throws(
      () => checkProcesses(2, 'ort', 'PyTorch backend unavailable (no torch)'),
      /^Error: --processes 2 needs the PyTorch backend \(--backend torch\); ONNX Runtime trains in one process \(PyTorch backend unavailable \(no torch\)\)$/,
    );
  });
});
