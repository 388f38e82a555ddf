import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Rng } from '../../../trainer/model/random';
import { TorchTrainer, type TorchTrainerOptions } from '../../../trainer/training/torch-bridge/torch-trainer';
import { tinyModelConfig } from '../../fixtures/tiny-config';
import { requireTorch } from './require-torch';

// The GPU options of the PyTorch backend, exercised on the CPU so they are known to work before a
// GPU session: gradient checkpointing must not change the numbers (fp32), bf16 autocast must stay
// close to fp32, and the prepared GPU benchmark must run end to end on tiny shapes.

const run = promisify(execFile);
const config = tinyModelConfig({
  model_type: 'qwen2',
  hidden_size: 64,
  intermediate_size: 96,
  vocab_size: 128,
  rms_norm_eps: 1e-6,
  max_position_embeddings: 64,
  tie_word_embeddings: true,
});
const source = { random: { config, seed: 2, std: 0.05 } };
const base: TorchTrainerOptions = {
  trainable: {
    method: 'lora',
    lora: { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], r: 4, alpha: 8 },
  },
  batch: 2,
  seqLen: 32,
  threads: 1,
  device: 'cpu',
};

async function losses(options: TorchTrainerOptions): Promise<number[]> {
  const rng = new Rng(6);
  const trainer = await TorchTrainer.create(source, options);
  try {
    const out: number[] = [];
    for (let i = 0; i < 6; i++) {
      const tokens = Int32Array.from({ length: 2 * 33 }, (_, j) => (rng.next() < 0.2 ? rng.int(128) : (j * 5) % 128));
      out.push((await trainer.step({ tokens }, 1e-2)).loss);
    }
    return out;
  } finally {
    await trainer.release();
  }
}

describe('PyTorch backend GPU options, checked on the CPU', function () {
  this.timeout(120_000);
  let python: string;
  before(async function () {
    const probe = await requireTorch(this);
    python = probe.python;
  });

  it('gradient checkpointing recomputes the same numbers; bf16 autocast stays within 2% of fp32', async () => {
    const plain = await losses(base);
    const checkpointed = await losses({ ...base, gradientCheckpointing: true });
    plain.forEach((loss, i) =>
      assert.ok(Math.abs(checkpointed[i] - loss) <= 1e-6 * loss, `step ${i + 1}: ${checkpointed[i]} vs ${loss}`),
    );
    const bf16 = await losses({ ...base, amp: 'bf16' });
    plain.forEach((loss, i) =>
      assert.ok(Math.abs(bf16[i] - loss) <= 2e-2 * loss, `step ${i + 1}: bf16 ${bf16[i]} vs fp32 ${loss}`),
    );
    assert.notDeepEqual(bf16, plain, 'autocast really ran in bf16');
    assert.ok(plain[5] < plain[0]);
  });

  it('gpu_bench.py runs both models on tiny shapes and reports tokens/s and MFU against its measured peak', async () => {
    const script = path.join(__dirname, '..', '..', '..', 'trainer', 'training', 'torch', 'gpu_bench.py');
    const { stdout } = await run(python, [
      script,
      '--tiny',
      '--device',
      'cpu',
      '--steps',
      '2',
      '--warmup',
      '1',
      '--batch',
      '2',
      '--seq',
      '32',
      '--threads',
      '1',
      '--gradient-checkpointing',
    ]);
    const result = JSON.parse(stdout);
    assert.ok(result.peak.tflops > 0);
    assert.equal(result.runs.length, 2);
    assert.match(result.runs[0].model, /qwen2\.5-coder-0\.5b/);
    assert.match(result.runs[1].model, /default model/);
    for (const r of result.runs) {
      assert.ok(r.tokensPerSecond > 0 && Number.isFinite(r.loss.last));
      assert.equal(r.gradientCheckpointing, true);
      // Both TFLOP/s figures are rounded to 0.0001, which on tiny CPU shapes is a large relative error.
      const quotient = r.achievedTflops / result.peak.tflops;
      const roundingError = quotient * (0.00005 / r.achievedTflops + 0.00005 / result.peak.tflops) + 0.00005;
      assert.ok(
        Math.abs(quotient - r.mfu) <= roundingError,
        `mfu ${r.mfu} vs ${r.achievedTflops} / ${result.peak.tflops}`,
      );
      assert.equal(r.flopsPerToken > 0, true);
    }
  });
});
