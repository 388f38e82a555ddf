import { assertGradientsMatchFiniteDifferences } from './finite-difference';
import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { buildForward } from '../../../trainer/compute/engine/llama';
import { Graph } from '../../../trainer/compute/graph/graph';
import { serializeModel } from '../../../trainer/compute/graph/onnx';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCheckpoint, randomCheckpointWeights } from '../../../trainer/model/checkpoint';
import { writeRandomCheckpoint } from '../../../trainer/tools/bench/random-checkpoint';
import type { ModelConfig } from '../../../trainer/model/config';
import { Rng } from '../../../trainer/model/random';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import type { AdamWOptions } from '../../../trainer/training/ort/adamw';
import { loraScaling, type LoraConfig } from '../../../trainer/model/lora';
import { TrainingSession } from '../../../trainer/training/ort/session';
import { Trainer } from '../../../trainer/training/ort/trainer';
import type { HostTensor } from '../../../trainer/model/tensor';
import { tinyModelConfig } from '../../fixtures/tiny-config';

// A tiny llama (GQA, 2 layers) trained for real through ONNX Runtime.
const cfg: ModelConfig = tinyModelConfig();
const weights = randomCheckpointWeights(cfg, 5, { std: 0.2 });
const B = 2;
const T = 6;
const allTargets: LoraConfig = {
  targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  r: 4,
  alpha: 8,
};

function tokenRows(seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: B * (T + 1) }, () => rng.int(cfg.vocabSize));
}

function randomLike(tensors: Record<string, HostTensor>, seed: number, scale: number): Record<string, HostTensor> {
  const rng = new Rng(seed);
  const out: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    const data = new Float64Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = rng.normal() * scale;
    out[name] = { dtype: 'float64', shape: t.shape, data };
  }
  return out;
}

/** Logits [B, T, V] of the forward graph with an optional adapter fed as inputs. */
async function logits(
  tokens: number[],
  lora?: { options: LoraConfig; tensors: Map<string, HostTensor> },
): Promise<Float32Array> {
  const g = new Graph('fwd');
  const fwd = buildForward(g, cfg, weights, {
    batch: B,
    seqLen: T,
    lora: lora
      ? { targets: lora.options.targets, rank: lora.options.r, scaling: loraScaling(lora.options) }
      : undefined,
  });
  g.output(fwd.logits, 'logits');
  const { model, externalData, externalDataName } = serializeModel(g);
  const session = await ort.InferenceSession.create(model, {
    externalData: [{ path: externalDataName, data: externalData }],
    logSeverityLevel: 3,
  });
  const ids = new BigInt64Array(B * T);
  const positions = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = BigInt(tokens[b * (T + 1) + t]);
      positions[b * T + t] = BigInt(t);
    }
  }
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', ids, [B, T]),
    position_ids: new ort.Tensor('int64', positions, [B, T]),
  };
  for (const [name, t] of lora?.tensors ?? [])
    feeds[name] = new ort.Tensor('float32', Float32Array.from(t.data as Float32Array), t.shape);
  const out = await session.run(feeds);
  await session.release();
  return out.logits.data as Float32Array;
}

/** PyTorch's AdamW with clip_grad_norm_, in plain JS (float64): the reference for one tensor. */
function adamwReference(
  p: ArrayLike<number>,
  g: ArrayLike<number>,
  m: ArrayLike<number>,
  v: ArrayLike<number>,
  clip: number,
  lr: number,
  t: number,
  o: AdamWOptions,
  decay: boolean,
) {
  const n = p.length;
  const np = new Float64Array(n);
  const nm = new Float64Array(n);
  const nv = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const grad = g[i] * clip;
    nm[i] = o.beta1 * m[i] + (1 - o.beta1) * grad;
    nv[i] = o.beta2 * v[i] + (1 - o.beta2) * grad * grad;
    const mHat = nm[i] / (1 - o.beta1 ** t);
    const vHat = nv[i] / (1 - o.beta2 ** t);
    const decayed = decay ? p[i] * (1 - lr * o.weightDecay) : p[i];
    np[i] = decayed - (lr * mHat) / (Math.sqrt(vHat) + o.eps);
  }
  return { p: np, m: nm, v: nv };
}

function maxRelativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return diff / Math.max(scale, 1e-300);
}

describe('training graph', () => {
  it('LoRA with B = 0 gives logits identical to the base; after training steps the adapter changes them', async () => {
    const tokens = tokenRows(1);
    const base = await logits(tokens);
    const session = await TrainingSession.create(cfg, weights, {
      trainable: { method: 'lora', lora: allTargets },
      batch: B,
      seqLen: T,
      threads: 1,
    });
    const fresh = new Map(Object.entries(session.getTrainable()));
    const names = [...fresh.keys()];
    assert.ok(names.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'), names.join(', '));
    assert.deepEqual(fresh.get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')!.shape, [16, 4]);
    assert.deepEqual(fresh.get('base_model.model.model.layers.1.mlp.down_proj.lora_A.weight')!.shape, [4, 24]);
    const withFresh = await logits(tokens, { options: allTargets, tensors: fresh });
    assert.deepEqual(Array.from(withFresh), Array.from(base), 'a fresh adapter must not change the logits');

    for (let i = 0; i < 3; i++) await session.step({ tokens }, 1e-2);
    const trained = await logits(tokens, {
      options: allTargets,
      tensors: new Map(Object.entries(session.getTrainable())),
    });
    const change = maxRelativeError(trained, base);
    assert.ok(change > 1e-3, `trained adapter changed the logits by only ${change}`);
    await session.release();
  });

  for (const lossRowsPerChunk of [undefined, 5]) {
    it(`the loss is the masked mean NLL of the forward logits (${lossRowsPerChunk ? 'loss in chunks' : 'one chunk'})`, async () => {
      const tokens = tokenRows(2);
      const mask = Array.from({ length: B * T }, (_, i) => (i % 3 === 1 ? 0 : i % 5 === 0 ? 0.5 : 1));
      const session = await TrainingSession.create(cfg, weights, {
        trainable: { method: 'full' },
        batch: B,
        seqLen: T,
        threads: 1,
        lossRowsPerChunk,
      });
      const { loss, tokens: counted } = await session.step({ tokens, lossMask: mask }, 0);
      const z = await logits(tokens);
      const V = cfg.vocabSize;
      let total = 0;
      let count = 0;
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const row = z.subarray((b * T + t) * V, (b * T + t + 1) * V);
          const max = Math.max(...row);
          let sum = 0;
          for (const x of row) sum += Math.exp(x - max);
          const target = tokens[b * (T + 1) + t + 1];
          total += mask[b * T + t] * -(row[target] - max - Math.log(sum));
          count += mask[b * T + t];
        }
      }
      assert.ok(Math.abs(counted - count) < 1e-6);
      assert.ok(Math.abs(loss - total / count) < 1e-5 * (total / count), `loss ${loss}, reference ${total / count}`);
      await session.release();
    });
  }

  for (const method of ['lora', 'full'] as const) {
    it(`${method}: gradients of the whole model match finite differences (float64)`, async () => {
      const tokens = tokenRows(3);
      const session = await TrainingSession.create(cfg, weights, {
        trainable: method === 'lora' ? { method, lora: allTargets } : { method },
        batch: B,
        seqLen: T,
        threads: 1,
        dtype: 'float64',
        exposeGradients: true,
        lossRowsPerChunk: 5, // 12 rows: chunks of 5, 5 and 2
      });
      const start = method === 'lora' ? randomLike(session.getTrainable(), 9, 0.3) : session.getTrainable();
      session.setTrainable(start);
      await session.step({ tokens }, 0); // lr 0: parameters stay; gradients come out
      const grads = session.lastGradients!;
      const lossAt = async (tensors: Record<string, HostTensor>) => {
        session.setTrainable(tensors);
        return (await session.step({ tokens }, 0)).loss;
      };
      const picked = Object.keys(start).filter((_, i) => i % 3 === 0);
      await assertGradientsMatchFiniteDifferences(start, grads, picked, lossAt);
      await session.release();
    });
  }

  it('fused kernels (RMSNorm, RoPE, SiLU) give the loss and gradients of the primitive graph', async () => {
    const tokens = tokenRows(4);
    const results = [];
    for (const fusedKernels of [false, true]) {
      const session = await TrainingSession.create(cfg, weights, {
        trainable: { method: 'full' },
        batch: B,
        seqLen: T,
        threads: 1,
        exposeGradients: true,
        fusedKernels,
      });
      const ops = new Set(session.built.graph.nodes.map((n) => n.op));
      for (const kernel of ['SimplifiedLayerNormalization', 'RotaryEmbedding', 'QuickGelu'])
        assert.equal(ops.has(kernel), fusedKernels, kernel);
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

  for (const maxGradNorm of [0.05, 1e6]) {
    it(`AdamW and clipping (max norm ${maxGradNorm}) match a plain-JS reference`, async () => {
      const optimizer: AdamWOptions = { beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, maxGradNorm };
      const session = await TrainingSession.create(cfg, weights, {
        trainable: { method: 'lora', lora: allTargets },
        batch: B,
        seqLen: T,
        threads: 1,
        dtype: 'float64',
        exposeGradients: true,
        optimizer,
      });
      session.setTrainable(randomLike(session.getTrainable(), 10, 0.2));
      // Non-zero moments and a later step, as in the middle of a run.
      const state = session.getOptimizerState();
      const moments = randomLike(state.m, 11, 0.01);
      const variances = Object.fromEntries(
        Object.entries(randomLike(state.v, 12, 0.01)).map(([k, t]) => [
          k,
          { ...t, data: (t.data as Float64Array).map((x) => x * x) },
        ]),
      );
      session.setOptimizerState({ step: 4, m: moments, v: variances });
      const before = session.getTrainable();
      const lr = 3e-3;
      const { gradNorm } = await session.step({ tokens: tokenRows(5) }, lr);
      const grads = session.lastGradients!;
      let squares = 0;
      for (const g of grads.values()) for (const x of g.data as Float64Array) squares += x * x;
      const norm = Math.sqrt(squares);
      assert.ok(Math.abs(gradNorm - norm) < 1e-9 * norm, `grad norm ${gradNorm} vs ${norm}`);
      const clip = Math.min(1, maxGradNorm / (norm + 1e-6));
      if (maxGradNorm < 1) assert.ok(clip < 0.5, `the small max norm should clip (norm ${norm})`);
      const after = session.getTrainable();
      const stateAfter = session.getOptimizerState();
      assert.equal(stateAfter.step, 5);
      for (const name of Object.keys(before)) {
        const want = adamwReference(
          before[name].data as Float64Array,
          grads.get(name)!.data as Float64Array,
          moments[name].data as Float64Array,
          variances[name].data as Float64Array,
          clip,
          lr,
          5,
          optimizer,
          true,
        );
        assert.ok(maxRelativeError(after[name].data as Float64Array, want.p) < 1e-12, `${name}: parameters`);
        assert.ok(maxRelativeError(stateAfter.m[name].data as Float64Array, want.m) < 1e-12, `${name}: first moment`);
        assert.ok(maxRelativeError(stateAfter.v[name].data as Float64Array, want.v) < 1e-12, `${name}: second moment`);
      }
      await session.release();
    });
  }

  it('a tiny model overfits a fixed batch (full fine-tuning and LoRA)', async () => {
    const tokens = tokenRows(6);
    for (const [method, lr, factor] of [
      ['full', 1e-2, 0.05],
      ['lora', 2e-2, 0.5],
    ] as const) {
      const session = await TrainingSession.create(cfg, weights, {
        trainable: method === 'lora' ? { method, lora: allTargets } : { method },
        batch: B,
        seqLen: T,
        threads: 1,
      });
      const first = (await session.step({ tokens }, lr)).loss;
      let last = first;
      for (let i = 0; i < 40; i++) last = (await session.step({ tokens }, lr)).loss;
      assert.ok(last < factor * first, `${method}: loss ${first} → ${last}`);
      await session.release();
    }
  });

  it('resuming from saved trainable tensors and optimizer state continues the same run', async () => {
    const options = { trainable: { method: 'lora' as const, lora: allTargets }, batch: B, seqLen: T, threads: 1 };
    const batches = [tokenRows(7), tokenRows(8), tokenRows(9)];
    const straight = await TrainingSession.create(cfg, weights, options);
    for (const tokens of batches) await straight.step({ tokens }, 1e-2);

    const first = await TrainingSession.create(cfg, weights, options);
    await first.step({ tokens: batches[0] }, 1e-2);
    await first.step({ tokens: batches[1] }, 1e-2);
    const saved = { trainable: first.getTrainable(), state: first.getOptimizerState() };
    await first.release();
    const resumed = await TrainingSession.create(cfg, weights, { ...options, seed: 99 });
    resumed.setTrainable(saved.trainable);
    resumed.setOptimizerState(saved.state);
    await resumed.step({ tokens: batches[2] }, 1e-2);

    const want = straight.getTrainable();
    const got = resumed.getTrainable();
    for (const name of Object.keys(want))
      assert.deepEqual(Array.from(got[name].data as Float32Array), Array.from(want[name].data as Float32Array), name);
    await straight.release();
    await resumed.release();
  });

  it('evaluate() gives the loss a step would report, and changes nothing', async () => {
    const session = await TrainingSession.create(cfg, weights, {
      trainable: { method: 'lora', lora: allTargets },
      batch: B,
      seqLen: T,
      threads: 1,
      evaluation: true,
    });
    const train = tokenRows(10);
    const heldOut = tokenRows(11);
    const mask = Array.from({ length: B * T }, (_, i) => (i % 4 === 0 ? 0 : 1));
    for (let i = 0; i < 3; i++) await session.step({ tokens: train }, 1e-2);
    const before = session.getOptimizerState();
    const evaluated = await session.evaluate({ tokens: heldOut, lossMask: mask });
    assert.equal(
      evaluated.tokens,
      mask.reduce((a: number, b: number) => a + b, 0),
    );
    assert.deepEqual(session.getOptimizerState(), before);
    const stepped = await session.step({ tokens: heldOut, lossMask: mask }, 0);
    assert.ok(Math.abs(evaluated.loss - stepped.loss) < 1e-6 * stepped.loss, `${evaluated.loss} vs ${stepped.loss}`);
    await session.release();
  });

  it('rejects bad batches and mismatched tensors with one clear error', async () => {
    const session = await TrainingSession.create(cfg, weights, {
      trainable: { method: 'lora', lora: allTargets },
      batch: B,
      seqLen: T,
      threads: 1,
    });
    await assert.rejects(session.step({ tokens: [1, 2, 3] }, 1e-3), /batch has 3 tokens; expected 2×7/);
    await assert.rejects(
      session.step({ tokens: tokenRows(1).map((t, i) => (i === 4 ? 999 : t)) }, 1e-3),
      /token id 999 out of range/,
    );
    const trainable = session.getTrainable();
    const name = Object.keys(trainable)[0];
    assert.throws(
      () => session.setTrainable({ ...trainable, [name]: { dtype: 'float32', shape: [1], data: new Float32Array(1) } }),
      /shape \[1\] does not match/,
    );
    await session.release();
  });
});

describe('Trainer (in the engine worker)', () => {
  it('trains through the worker and returns PEFT-named tensors', async () => {
    const worker = EngineWorker.start();
    try {
      const trainer = await Trainer.create(
        worker,
        { random: { config: cfg, seed: 5, std: 0.2 } },
        {
          trainable: { method: 'lora', lora: { targets: ['q_proj', 'v_proj'], r: 2, alpha: 4 } },
          batch: B,
          seqLen: T,
          threads: 1,
        },
      );
      assert.equal(trainer.trainable.length, 2 * 2 * cfg.numLayers);
      assert.ok(trainer.flopsPerStep.total > trainer.flopsPerStep.backward && trainer.flopsPerStep.backward > 0);
      const first = await trainer.step({ tokens: tokenRows(1) }, 1e-2);
      const second = await trainer.step({ tokens: tokenRows(1) }, 1e-2);
      assert.equal(second.step, 2);
      assert.ok(second.loss < first.loss, `${first.loss} → ${second.loss}`);
      const tensors = await trainer.getTrainable();
      assert.deepEqual(tensors.get('base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight')!.shape, [8, 2]);
      await assert.rejects(trainer.step({ tokens: [1] }, 1e-2), /batch has 1 tokens/);
      await trainer.release();
    } finally {
      await worker.terminate();
    }
  });

  it('trains from a checkpoint folder read tensor by tensor, as from the same weights in memory', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-train-checkpoint-'));
    const worker = EngineWorker.start();
    try {
      writeRandomCheckpoint(dir, cfg, { seed: 4 });
      const options = {
        trainable: { method: 'full' as const },
        batch: B,
        seqLen: T,
        threads: 1,
      };
      const inMemory = await loadCheckpoint(dir);
      const fromMemory = await Trainer.create(
        worker,
        { config: cfg, weights: Object.fromEntries(inMemory.weights) },
        options,
      );
      const fromFolder = await Trainer.create(worker, { checkpointDir: dir }, options);
      for (let i = 0; i < 2; i++) {
        const a = await fromMemory.step({ tokens: tokenRows(i) }, 1e-2);
        const b = await fromFolder.step({ tokens: tokenRows(i) }, 1e-2);
        assert.equal(b.loss, a.loss);
      }
      const trained = await fromFolder.getTrainable();
      for (const [name, tensor] of await fromMemory.getTrainable())
        assert.deepEqual(trained.get(name)!.data, tensor.data, name);
      await fromMemory.release();
      await fromFolder.release();
    } finally {
      await worker.terminate();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps no frozen weight in the training graph once the session is open', async () => {
    const session = await TrainingSession.create(cfg, weights, {
      trainable: { method: 'lora', lora: allTargets },
      batch: B,
      seqLen: T,
      threads: 1,
    });
    try {
      const frozen = session.built.graph.initializers;
      assert.ok(frozen.some((entry) => entry.value.name === 'model.embed_tokens.weight'));
      assert.equal(session.built.graph.initializerBytes(), 0);
    } finally {
      await session.release();
    }
  });
});
