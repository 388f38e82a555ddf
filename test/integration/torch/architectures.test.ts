import { strict as assert } from 'node:assert';
import type { ModelConfig } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import { learningRateAt } from '../../../trainer/training/pipeline/plan';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import type { HostTensor } from '../../../trainer/model/tensor';
import { TorchTrainer } from '../../../trainer/training/torch-bridge/torch-trainer';
import { Trainer, type TrainingBatch, type TrainingOptions } from '../../../trainer/training/ort/trainer';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { requireTorch } from './require-torch';

// The PyTorch backend on the architectures beyond llama/qwen2: qwen3 (per-head q/k RMSNorm,
// head_dim ≠ hidden / heads) and rope_scaling llama3 and linear. The reference is the ONNX Runtime
// trainer in float64; how far its own float32 run lands from that reference is the float32 error
// of a correct implementation, and PyTorch (float32) must land within a few times that error, for
// every step's loss and gradient norm and for the trained tensors.

const STEPS = 10;
/** How many times the ORT float32 run's own distance from float64 the PyTorch run may be. */
const ERROR_FACTOR = 10;
/** Floor of the relative tolerance: a float32 error below one rounding step is not measurable. */
const FLOAT32_EPSILON = 2 ** -23;

const LLAMA3_SCALING = {
  rope_type: 'llama3',
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 16,
};

function config(overrides: Record<string, unknown>): ModelConfig {
  return tinyModelConfig({
    hidden_size: 32,
    intermediate_size: 48,
    vocab_size: 96,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 64,
    rope_theta: 500,
    ...overrides,
  });
}

/** Rows of a noisy repeating pattern with the last targets of each row masked. */
function batches(cfg: ModelConfig, batch: number, seqLen: number): TrainingBatch[] {
  const rng = new Rng(11);
  return Array.from({ length: STEPS }, () => ({
    tokens: Int32Array.from({ length: batch * (seqLen + 1) }, (_, i) =>
      rng.next() < 0.2 ? rng.int(cfg.vocabSize) : (i * 5) % cfg.vocabSize,
    ),
    lossMask: Float32Array.from({ length: batch * seqLen }, (_, i) => (i % seqLen < seqLen - 3 ? 1 : 0)),
  }));
}

interface Run {
  losses: number[];
  gradNorms: number[];
  start: Map<string, HostTensor>;
  end: Map<string, HostTensor>;
}

type Stepper = {
  step(batch: TrainingBatch, learningRate: number): Promise<{ loss: number; gradNorm: number }>;
  getTrainable(): Promise<Map<string, HostTensor>>;
  release(): Promise<void>;
};

async function run(trainer: Stepper, data: TrainingBatch[]): Promise<Run> {
  const schedule = { peakLearningRate: 1e-2, warmupSteps: 2, totalSteps: STEPS, minRatio: 0.1 };
  const result: Run = { losses: [], gradNorms: [], start: await trainer.getTrainable(), end: new Map() };
  try {
    for (let step = 1; step <= STEPS; step++) {
      const { loss, gradNorm } = await trainer.step(data[step - 1], learningRateAt(schedule, step));
      result.losses.push(loss);
      result.gradNorms.push(gradNorm);
    }
    result.end = await trainer.getTrainable();
  } finally {
    await trainer.release();
  }
  return result;
}

/** Largest |a − b| / |b| over the steps. */
function stepError(a: number[], b: number[]): number {
  return Math.max(...a.map((value, i) => Math.abs(value - b[i]) / Math.abs(b[i])));
}

/** ‖a − b‖ / ‖b‖ over every tensor (Frobenius). */
function tensorError(a: ReadonlyMap<string, HostTensor>, b: ReadonlyMap<string, HostTensor>): number {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let difference = 0;
  let reference = 0;
  for (const [name, tensor] of b) {
    const x = a.get(name)!.data;
    const y = tensor.data;
    assert.equal(x.length, y.length, name);
    for (let i = 0; i < y.length; i++) {
      difference += (Number(x[i]) - Number(y[i])) ** 2;
      reference += Number(y[i]) ** 2;
    }
  }
  return Math.sqrt(difference / reference);
}

async function compare(cfg: ModelConfig, options: TrainingOptions) {
  const source = { random: { config: cfg, seed: 4, std: 0.08 } };
  const data = batches(cfg, options.batch, options.seqLen);
  const worker = EngineWorker.start();
  try {
    const float64 = await run(await Trainer.create(worker, source, { ...options, dtype: 'float64' }), data);
    const float32 = await run(await Trainer.create(worker, source, options), data);
    const torch = await run(await TorchTrainer.create(source, options), data);
    assert.equal(tensorError(torch.start, float64.start), 0, 'both backends start from identical tensors');
    return { float64, float32, torch };
  } finally {
    await worker.terminate();
  }
}

function assertWithinFloat32Error(runs: Awaited<ReturnType<typeof compare>>): void {
  const { float64, float32, torch } = runs;
  const moved = tensorError(float64.start, float64.end);
  assert.ok(float64.losses[STEPS - 1] < float64.losses[0], 'training lowers the loss');
  const checks: Array<[string, number, number]> = [
    ['loss', stepError(torch.losses, float64.losses), stepError(float32.losses, float64.losses)],
    ['gradient norm', stepError(torch.gradNorms, float64.gradNorms), stepError(float32.gradNorms, float64.gradNorms)],
    ['trained tensors', tensorError(torch.end, float64.end), tensorError(float32.end, float64.end)],
  ];
  for (const [what, error, float32Error] of checks) {
    const tolerance = ERROR_FACTOR * Math.max(float32Error, FLOAT32_EPSILON);
    assert.ok(
      error <= tolerance,
      `${what}: PyTorch is ${error.toExponential(2)} from float64, ORT float32 ${float32Error.toExponential(2)} (tolerance ${tolerance.toExponential(2)})`,
    );
    assert.ok(tolerance < moved / 100, `${what}: the tolerance is far below how far training moved the tensors`);
  }
}

describe('PyTorch backend: qwen3 and rope_scaling against ONNX Runtime (float64 reference)', function () {
  this.timeout(180_000);

  before(async function () {
    await requireTorch(this);
  });

  it('qwen3 with llama3 rope_scaling, LoRA on every projection', async () => {
    const cfg = config({ model_type: 'qwen3', head_dim: 12, rope_scaling: LLAMA3_SCALING });
    const options: TrainingOptions = {
      trainable: {
        method: 'lora',
        lora: {
          targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
          r: 4,
          alpha: 8,
        },
      },
      batch: 2,
      seqLen: 40,
      threads: 1,
      seed: 6,
      optimizer: { weightDecay: 0.1, maxGradNorm: 0.5 },
    };
    assertWithinFloat32Error(await compare(cfg, options));
  });

  it('llama with linear rope_scaling, LoRA on q and v', async () => {
    const cfg = config({ model_type: 'llama', rope_scaling: { type: 'linear', factor: 4 } });
    const options: TrainingOptions = {
      trainable: { method: 'lora', lora: { targets: ['q_proj', 'v_proj'], r: 4, alpha: 8 } },
      batch: 2,
      seqLen: 40,
      threads: 1,
      seed: 7,
    };
    assertWithinFloat32Error(await compare(cfg, options));
  });

  it('qwen3 full fine-tuning: the q/k norms train too', async () => {
    const cfg = config({ model_type: 'qwen3', rope_scaling: { rope_type: 'linear', factor: 2 } });
    const options: TrainingOptions = {
      trainable: { method: 'full' },
      batch: 2,
      seqLen: 24,
      threads: 1,
      optimizer: { weightDecay: 0.1 },
    };
    const runs = await compare(cfg, options);
    assert.ok(runs.torch.end.has('model.layers.1.self_attn.k_norm.weight'), 'the k norm is trainable');
    assertWithinFloat32Error(runs);
  });
});
