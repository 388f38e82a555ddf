import { Graph } from '../../compute/graph/graph';
import { serializeModel } from '../../compute/graph/onnx';
import * as op from '../../compute/graph/ops';
import type { ModelConfig } from '../../model/config';
import { Rng } from '../../model/random';
import { EngineWorker } from '../../compute/runtime/client';
import type { LoraConfig } from '../../model/lora';
import { Trainer } from '../../training/ort/trainer';
import { newestProfile, summarizeProfile } from './profile-summary';
import { median, referenceConfig } from './reference';
import { round } from '../../util/round';

// `idiom bench train`: training speed on the reference config (reference.ts), and in the same process
// the fp32 MatMul peak, so mfu = achieved / peak compares like with like on a shared, noisy
// machine. The peak is the faster of the model's two largest weight products, [B·T, D]·[D, F]
// (the MLP) and [B·T, D]·[D, V] (lm_head, whose 64 MB output makes it the slower one), each a
// prepacked MatMul on the same thread count. Peak runs and training steps are interleaved, and
// medians are reported, so a burst of load from elsewhere hits both.
//
// FLOP convention (trainer/compute/graph/flops.ts): the matrix products the training graph actually
// computes, 2·M·N·K each: forward weight products (lm_head included), attention QKᵀ and PV over
// the full T×T square (the mask is additive), LoRA products, and in the backward only what
// autodiff built: input gradients where a trainable tensor lies upstream, the attention
// backward, and the trainable tensors' own gradients. Frozen weights get no weight-gradient
// products. Elementwise work is not counted.

export interface BenchTrainOptions {
  threads?: number;
  /** Timed steps (after warm-up). */
  steps?: number;
  warmupSteps?: number;
  method?: 'lora' | 'full';
  batch?: number;
  seqLen?: number;
  lora?: LoraConfig;
  config?: ModelConfig;
  /** Idle ORT threads spin (see RuntimeSessionOptions.spinning); default: the trainer's (off). */
  spinning?: boolean;
  /** Writes ORT's per-node profile of the training session (JSON) with this file prefix. */
  profilePrefix?: string;
  log?: (line: string) => void;
}

/** x [rows, inner] · W [inner, cols] with W a prepacked initializer (a weight product of the model). */
function peakMatmulModel(rows: number, inner: number, cols: number) {
  const g = new Graph('peak_matmul');
  const x = g.input('x', 'float32', [rows, inner]);
  const rng = new Rng(7);
  const w = g.initializer('w', {
    dtype: 'float32',
    shape: [inner, cols],
    data: rng.fillNormal(new Float32Array(inner * cols), 0, 0.02),
  });
  // Only a corner comes back: returning 64 MB to JS would time the copy, not the product.
  g.output(op.slice(op.matmul(x, w), [0, 1], [0, 0], [1, 1]), 'corner');
  return serializeModel(g);
}

export async function benchTrain(options: BenchTrainOptions = {}): Promise<Record<string, unknown>> {
  const cfg = options.config ?? referenceConfig();
  const threads = options.threads ?? 2;
  const steps = options.steps ?? 5;
  const warmupSteps = options.warmupSteps ?? 2;
  const method = options.method ?? 'lora';
  const batch = options.batch ?? 8;
  const seqLen = options.seqLen ?? 256;
  const lora: LoraConfig = options.lora ?? { targets: ['q_proj', 'v_proj'], r: 16, alpha: 32 };
  const log = options.log ?? (() => {});
  const spinning = options.spinning ?? false;
  if (!Number.isInteger(threads) || threads < 1)
    throw new Error(`--threads must be a positive integer, got ${threads}`);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${steps}`);

  const worker = EngineWorker.start();
  try {
    log(`building the ${method} training graph (B ${batch}, T ${seqLen}, ${threads} threads)`);
    const trainer = await Trainer.create(
      worker,
      { random: { config: cfg, seed: 1 } },
      {
        trainable: method === 'lora' ? { method, lora } : { method },
        batch,
        seqLen,
        threads,
        spinning,
        profilePrefix: options.profilePrefix,
      },
    );
    const rows = batch * seqLen;
    const peakFeeds = {
      x: {
        dtype: 'float32' as const,
        shape: [rows, cfg.hiddenSize],
        data: new Rng(3).fillNormal(new Float32Array(rows * cfg.hiddenSize)),
      },
    };
    const peakProducts: { name: string; id: number; shape: string; flops: number; seconds: number[] }[] = [];
    for (const [name, columns] of [
      ['mlp', cfg.intermediateSize],
      ['lmHead', cfg.vocabSize],
    ] as const) {
      const { id } = await worker.call('createSession', peakMatmulModel(rows, cfg.hiddenSize, columns), {
        threads,
        spinning,
      });
      peakProducts.push({
        name,
        id,
        shape: `[${rows}, ${cfg.hiddenSize}] x [${cfg.hiddenSize}, ${columns}]`,
        flops: 2 * rows * cfg.hiddenSize * columns,
        seconds: [] as number[],
      });
    }
    // Runs per measurement: about as long for each product.
    const repeats = (flops: number) => Math.max(3, Math.round((3 * peakProducts[1].flops) / flops));

    const rng = new Rng(11);
    const tokens = Array.from({ length: batch * (seqLen + 1) }, () => rng.int(cfg.vocabSize));
    const learningRate = 1e-4;
    for (let i = 0; i < warmupSteps; i++) {
      const r = await trainer.step({ tokens }, learningRate);
      log(`warm-up step ${i + 1}: loss ${r.loss.toFixed(4)}, ${r.seconds.toFixed(3)} s`);
    }
    for (const p of peakProducts) await worker.call('timeSession', p.id, peakFeeds, 2);

    const stepSeconds: number[] = [];
    const losses: number[] = [];
    for (let i = 0; i < steps; i++) {
      for (const p of peakProducts)
        p.seconds.push(median(await worker.call('timeSession', p.id, peakFeeds, repeats(p.flops))) / 1000);
      const r = await trainer.step({ tokens }, learningRate);
      stepSeconds.push(r.seconds);
      losses.push(r.loss);
      const rates = peakProducts.map((p) => `${p.name} ${(p.flops / p.seconds[i] / 1e9).toFixed(0)}`).join(', ');
      log(`step ${i + 1}: loss ${r.loss.toFixed(4)}, ${r.seconds.toFixed(3)} s; products GFLOP/s: ${rates}`);
    }
    for (const p of peakProducts) await worker.call('releaseSession', p.id);
    await trainer.release();

    // ORT writes the profile when the session is released (above).
    const profileFile = options.profilePrefix === undefined ? undefined : newestProfile(options.profilePrefix);
    const stepTime = median(stepSeconds);
    const achieved = trainer.flopsPerStep.total / stepTime / 1e9;
    const productGflops = Object.fromEntries(
      peakProducts.map((p) => [p.name, round(p.flops / median(p.seconds) / 1e9, 1)]),
    );
    const peakGflops = Math.max(...Object.values(productGflops));
    return {
      tokensPerSecond: round((batch * seqLen) / stepTime, 1),
      achievedGflops: round(achieved, 1),
      peakGflops: round(peakGflops, 1),
      mfu: round(achieved / peakGflops, 3),
      stepSeconds: {
        median: round(stepTime, 4),
        min: round(Math.min(...stepSeconds), 4),
        max: round(Math.max(...stepSeconds), 4),
      },
      loss: { first: round(losses[0], 4), last: round(losses[losses.length - 1], 4) },
      config: {
        model: {
          hiddenSize: cfg.hiddenSize,
          numLayers: cfg.numLayers,
          numHeads: cfg.numHeads,
          numKvHeads: cfg.numKvHeads,
          intermediateSize: cfg.intermediateSize,
          vocabSize: cfg.vocabSize,
        },
        method,
        ...(method === 'lora' ? { lora } : {}),
        batch,
        seqLen,
        threads,
        spinning,
        steps,
        warmupSteps,
        trainableParameters: trainer.trainableParameters,
      },
      flops: {
        perStep: trainer.flopsPerStep.total,
        forward: trainer.flopsPerStep.forward,
        backward: trainer.flopsPerStep.backward,
        peakProducts: Object.fromEntries(
          peakProducts.map((p) => [p.name, { shape: p.shape, gflops: productGflops[p.name] }]),
        ),
        convention:
          'matrix products the training graph computes, 2*M*N*K each (forward incl. lm_head and full TxT attention, ' +
          'LoRA, backward input gradients only where a trainable tensor is upstream, trainable weight gradients); ' +
          'frozen weights get no weight-gradient products; elementwise work not counted',
      },
      setupSeconds: round(trainer.setupSeconds, 2),
      // The whole process: the random weights as generated (in memory, unlike a checkpoint's), the
      // training session and the peak-product sessions; `idiom train --base` measures a real run.
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      // Kernel time by op type over the warm-up and timed steps: the non-MatMul share to take out.
      ...(profileFile ? { profile: summarizeProfile(profileFile) } : {}),
    };
  } finally {
    await worker.terminate();
  }
}
