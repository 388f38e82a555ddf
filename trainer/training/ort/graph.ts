import { gradientsFromSeeds } from '../../compute/graph/autodiff';
import { Graph, type Value } from '../../compute/graph/graph';
import { type FloatDType, buildForward } from '../../compute/engine/llama';
import type { ModelConfig } from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import { type AdamWOptions, DEFAULT_ADAMW, appendAdamW } from './adamw';
import { loraScaling, validateLora, type LoraConfig } from '../../model/lora';
import { causalLmLoss, lossRowsPerChunk } from './loss';

// The training graph: forward (trainer/compute/engine/llama.ts) → masked causal LM loss → autodiff for
// the trainable set only → grad-norm clipping → AdamW, all in one graph, so a step is one
// session.run(). Trainable tensors and their moments are graph inputs and their updated values
// graph outputs; frozen weights are external-data initializers.

export type TrainableSet = { method: 'lora'; lora: LoraConfig } | { method: 'full' };

export interface TrainingGraphOptions {
  trainable: TrainableSet;
  batch: number; // B
  seqLen: number; // T
  optimizer?: Partial<AdamWOptions>;
  /** float64 serves gradient checks. Default float32. */
  dtype?: FloatDType;
  /** Also output each raw (unclipped) gradient as `grad/<name>` (tests). */
  exposeGradients?: boolean;
  /** Fused RMSNorm/RoPE/SiLU kernels in the forward (float32 only). Default: on for float32. */
  fusedKernels?: boolean;
  /** Tokens per lm_head + loss chunk; default: logits of about 16 MB per chunk. */
  lossRowsPerChunk?: number;
}

/** Graph input/output names. */
export const TRAIN_IO = {
  inputIds: 'input_ids',
  positionIds: 'position_ids',
  targets: 'targets',
  lossMask: 'loss_mask',
  learningRate: 'learning_rate',
  step: 'step',
  loss: 'loss',
  gradNorm: 'grad_norm',
  tokenCount: 'token_count',
  m: (name: string) => `adam.m/${name}`,
  v: (name: string) => `adam.v/${name}`,
  next: (input: string) => `next/${input}`,
  grad: (name: string) => `grad/${name}`,
};

export interface TrainableTensor {
  /** PEFT key (LoRA) or Hugging Face weight name (full). Also the graph input's name. */
  name: string;
  shape: number[];
  decay: boolean;
}

export interface TrainingGraph {
  graph: Graph;
  trainable: TrainableTensor[];
  vocabSize: number;
  options: Required<Omit<TrainingGraphOptions, 'exposeGradients' | 'fusedKernels' | 'lossRowsPerChunk'>> & {
    optimizer: AdamWOptions;
    exposeGradients: boolean;
  };
}

export function buildTrainingGraph(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: TrainingGraphOptions,
  weightSink?: Graph['weightSink'],
): TrainingGraph {
  const dtype = options.dtype ?? 'float32';
  const optimizer = { ...DEFAULT_ADAMW, ...options.optimizer };
  const { batch: B, seqLen: T, trainable: set } = options;
  if (!Number.isInteger(B) || B < 1) throw new Error(`batch must be a positive integer, got ${B}`);
  if (!Number.isInteger(T) || T < 1) throw new Error(`sequence length must be a positive integer, got ${T}`);
  if (T > cfg.maxPositionEmbeddings)
    throw new Error(`sequence length ${T} exceeds the model's ${cfg.maxPositionEmbeddings} positions`);
  if (set.method === 'lora') validateLora(set.lora);

  const { graph, forward, targets, mask } = buildLossInputs('train', cfg, weights, options, weightSink);
  const learningRate = graph.input(TRAIN_IO.learningRate, dtype, []);
  const step = graph.input(TRAIN_IO.step, dtype, []);

  const rowsPerChunk = options.lossRowsPerChunk ?? lossRowsPerChunk(cfg.vocabSize, dtype === 'float64' ? 8 : 4);
  const { loss, count, seeds } = graph.scope('loss', () =>
    causalLmLoss(forward.hidden, forward.lmHeadWeight, targets, mask, { rowsPerChunk }),
  );

  const params: { name: string; value: Value; decay: boolean }[] = [];
  if (set.method === 'lora') {
    for (const { a, b } of forward.loraInputs.values()) {
      params.push({ name: a.name, value: a, decay: true });
      params.push({ name: b.name, value: b, decay: true });
    }
  } else {
    for (const [name, value] of forward.weightInputs) params.push({ name, value, decay: value.rank >= 2 });
  }

  // Backward from each chunk's logits, seeded with the loss's own gradient (see causalLmLoss).
  const grads = graph.scope('backward', () =>
    gradientsFromSeeds(
      graph,
      seeds,
      params.map((p) => p.value),
    ),
  );
  const moments = params.map((p) => ({
    m: graph.input(TRAIN_IO.m(p.name), dtype, p.value.shape),
    v: graph.input(TRAIN_IO.v(p.name), dtype, p.value.shape),
  }));
  const { updates, gradNorm } = appendAdamW(
    graph,
    params.map((p, i) => ({
      param: p.value,
      grad: grads.get(p.value)!,
      m: moments[i].m,
      v: moments[i].v,
      decay: p.decay,
    })),
    learningRate,
    step,
    optimizer,
  );

  // outputAs: no Identity copies the parameters and moments on every step.
  graph.outputAs(loss, TRAIN_IO.loss);
  graph.outputAs(gradNorm, TRAIN_IO.gradNorm);
  graph.outputAs(count, TRAIN_IO.tokenCount);
  params.forEach((p, i) => {
    graph.outputAs(updates[i].param, TRAIN_IO.next(p.name));
    graph.outputAs(updates[i].m, TRAIN_IO.next(TRAIN_IO.m(p.name)));
    graph.outputAs(updates[i].v, TRAIN_IO.next(TRAIN_IO.v(p.name)));
    if (options.exposeGradients) graph.outputAs(grads.get(p.value)!, TRAIN_IO.grad(p.name));
  });

  return {
    graph,
    trainable: params.map((p) => ({ name: p.name, shape: p.value.staticShape(), decay: p.decay })),
    vocabSize: cfg.vocabSize,
    options: {
      trainable: set,
      batch: B,
      seqLen: T,
      dtype,
      optimizer,
      exposeGradients: options.exposeGradients ?? false,
    },
  };
}

export interface EvaluationGraph {
  graph: Graph;
  /** Trainable tensors the graph takes as inputs (same names as the training graph's). */
  trainable: TrainableTensor[];
}

/** Forward + masked loss only, with the trainable tensors as inputs: held-out loss without a step. */
export function buildEvaluationGraph(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: TrainingGraphOptions,
  weightSink?: Graph['weightSink'],
): EvaluationGraph {
  const dtype = options.dtype ?? 'float32';
  const { trainable: set } = options;
  const { graph, forward, targets, mask } = buildLossInputs('evaluate', cfg, weights, options, weightSink);
  const rowsPerChunk = options.lossRowsPerChunk ?? lossRowsPerChunk(cfg.vocabSize, dtype === 'float64' ? 8 : 4);
  const { loss, count } = graph.scope('loss', () =>
    causalLmLoss(forward.hidden, forward.lmHeadWeight, targets, mask, { rowsPerChunk, withGradient: false }),
  );
  graph.output(loss, TRAIN_IO.loss);
  graph.output(count, TRAIN_IO.tokenCount);
  const inputs =
    set.method === 'lora'
      ? [...forward.loraInputs.values()].flatMap(({ a, b }) => [a, b])
      : [...forward.weightInputs.values()];
  return { graph, trainable: inputs.map((v) => ({ name: v.name, shape: v.staticShape(), decay: v.rank >= 2 })) };
}

/** The forward pass of the trainable set plus the loss's inputs: what training and evaluation share. */
function buildLossInputs(
  name: string,
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: TrainingGraphOptions,
  weightSink: Graph['weightSink'],
) {
  const dtype = options.dtype ?? 'float32';
  const { batch: B, seqLen: T, trainable: set } = options;
  const graph = new Graph(name);
  graph.weightSink = weightSink;
  const forward = buildForward(graph, cfg, weights, {
    batch: B,
    seqLen: T,
    dtype,
    trainableWeights: set.method === 'full' ? 'all' : 'none',
    lora:
      set.method === 'lora'
        ? { targets: set.lora.targets, rank: set.lora.r, scaling: loraScaling(set.lora) }
        : undefined,
    fusedKernels: options.fusedKernels ?? dtype === 'float32',
  });
  const targets = graph.input(TRAIN_IO.targets, 'int64', [B, T]);
  const mask = graph.input(TRAIN_IO.lossMask, dtype, [B, T]);
  return { graph, forward, targets, mask };
}
