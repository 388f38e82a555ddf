import { assertGradientsMatchFiniteDifferences } from './finite-difference';
import { strict as assert } from 'node:assert';
import { randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';
import { TrainingSession } from '../../../trainer/training/ort/session';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// The training graph for the newer architectures: a qwen3 model (q/k norms, head_dim ≠ hidden /
// heads) with llama3 rope_scaling, so both features sit on the path autodiff differentiates.
const cfg = tinyModelConfig({
  model_type: 'qwen3',
  head_dim: 6,
  max_position_embeddings: 16,
  rope_theta: 50,
  rope_scaling: {
    rope_type: 'llama3',
    factor: 4,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8,
  },
});
const weights = randomCheckpointWeights(cfg, 5, { std: 0.3 });
const B = 2;
const T = 10;
const tokens = Array.from({ length: B * (T + 1) }, (_, i) => new Rng(3 + i).int(cfg.vocabSize));

function maxRelativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return diff / Math.max(scale, 1e-300);
}

describe('training graph: qwen3 with llama3 rope_scaling', () => {
  it('full fine-tuning: gradients of the q/k norms and projections match finite differences (float64)', async () => {
    const session = await TrainingSession.create(cfg, weights, {
      trainable: { method: 'full' },
      batch: B,
      seqLen: T,
      threads: 1,
      dtype: 'float64',
      exposeGradients: true,
    });
    const start = session.getTrainable();
    assert.ok('model.layers.1.self_attn.k_norm.weight' in start, 'the q/k norms are trainable weights');
    await session.step({ tokens }, 0); // lr 0: parameters stay; gradients come out
    const grads = session.lastGradients!;
    const lossAt = async (tensors: Record<string, HostTensor>) => {
      session.setTrainable(tensors);
      return (await session.step({ tokens }, 0)).loss;
    };
    const picked = [
      'model.layers.0.self_attn.q_norm.weight',
      'model.layers.1.self_attn.k_norm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.1.self_attn.k_proj.weight',
    ];
    await assertGradientsMatchFiniteDifferences(start, grads, picked, lossAt);
    await session.release();
  });

  it('fused kernels give the loss and LoRA gradients of the primitive graph', async () => {
    const results = [];
    for (const fusedKernels of [false, true]) {
      const session = await TrainingSession.create(cfg, weights, {
        trainable: { method: 'lora', lora: { targets: ['q_proj', 'k_proj', 'v_proj'], r: 2, alpha: 4 } },
        batch: B,
        seqLen: T,
        threads: 1,
        exposeGradients: true,
        fusedKernels,
      });
      // Nonzero B, so the gradients reach A through the norms.
      const trainable = session.getTrainable();
      const rng = new Rng(9);
      for (const tensor of Object.values(trainable)) rng.fillNormal(tensor.data as Float32Array, 0, 0.3);
      session.setTrainable(trainable);
      const { loss } = await session.step({ tokens }, 0);
      results.push({ loss, grads: session.lastGradients! });
      await session.release();
    }
    const [plain, fused] = results;
    assert.ok(Math.abs(plain.loss - fused.loss) < 1e-5 * plain.loss, `loss ${plain.loss} vs ${fused.loss}`);
    for (const [name, g] of plain.grads) {
      const error = maxRelativeError(fused.grads.get(name)!.data as Float32Array, g.data as Float32Array);
      assert.ok(error < 1e-4, `${name}: relative difference ${error}`);
    }
  });
});
