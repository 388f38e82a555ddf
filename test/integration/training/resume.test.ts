import { strict as assert } from 'node:assert';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { Rng } from '../../../trainer/model/random';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { type OptimizerState, Trainer, type TrainingOptions } from '../../../trainer/training/ort/trainer';
import type { HostTensor } from '../../../trainer/model/tensor';

// A training run in the engine worker is stopped (the worker is terminated, as when the editor
// closes), and a new worker resumes from the saved adapter and optimizer state: the resumed run
// must follow the uninterrupted one step for step.

// qwen2: q/k/v biases; GQA.
const config = tinyModelConfig({
  model_type: 'qwen2',
  hidden_size: 64,
  intermediate_size: 96,
  vocab_size: 64,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
});
const source = { random: { config, seed: 3, std: 0.05 } };
const options: TrainingOptions = {
  trainable: {
    method: 'lora',
    lora: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], r: 8, alpha: 16 },
  },
  batch: 4,
  seqLen: 32,
  threads: 1,
  optimizer: { weightDecay: 0.01 },
};

/** Rows of a repeating pattern with noise: learnable, so the loss falls. */
function batches(count: number): number[][] {
  const rng = new Rng(21);
  return Array.from({ length: count }, () =>
    Array.from({ length: options.batch * (options.seqLen + 1) }, (_, i) =>
      rng.next() < 0.1 ? rng.int(64) : (i * 5) % 64,
    ),
  );
}

async function withWorker<T>(body: (worker: EngineWorker) => Promise<T>): Promise<T> {
  const worker = EngineWorker.start();
  try {
    return await body(worker);
  } finally {
    await worker.terminate();
  }
}

describe('training in the engine worker: stop and resume', () => {
  it('a resumed run matches the uninterrupted run', async () => {
    const data = batches(16);
    const lr = (step: number) => 1e-2 * Math.min(1, (step + 1) / 4); // warm-up, as a schedule would

    const straight = await withWorker(async (worker) => {
      const trainer = await Trainer.create(worker, source, options);
      const losses: number[] = [];
      for (let i = 0; i < data.length; i++) losses.push((await trainer.step({ tokens: data[i] }, lr(i))).loss);
      return { losses, adapter: await trainer.getTrainable() };
    });
    assert.ok(
      straight.losses[15] < 0.85 * straight.losses[0],
      `loss should fall: ${straight.losses[0]} → ${straight.losses[15]}`,
    );

    const saved = await withWorker(async (worker) => {
      const trainer = await Trainer.create(worker, source, options);
      for (let i = 0; i < 9; i++) await trainer.step({ tokens: data[i] }, lr(i));
      return { adapter: await trainer.getTrainable(), state: await trainer.getOptimizerState() };
    });
    const resumed = await withWorker(async (worker) => {
      const trainer = await Trainer.create(worker, source, { ...options, seed: 1234 });
      await trainer.setTrainable(saved.adapter as Map<string, HostTensor>);
      await trainer.setOptimizerState(saved.state as OptimizerState);
      const losses: number[] = [];
      for (let i = 9; i < data.length; i++) losses.push((await trainer.step({ tokens: data[i] }, lr(i))).loss);
      return { losses, adapter: await trainer.getTrainable() };
    });

    assert.deepEqual(resumed.losses, straight.losses.slice(9));
    for (const [name, tensor] of straight.adapter) {
      assert.deepEqual(
        Array.from(resumed.adapter.get(name)!.data as Float32Array),
        Array.from(tensor.data as Float32Array),
        name,
      );
    }
  });
});
