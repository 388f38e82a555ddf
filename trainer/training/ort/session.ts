import * as ort from 'onnxruntime-node';
import { serializeModel } from '../../compute/graph/onnx';
import type { ModelConfig } from '../../model/config';
import { type RuntimeSessionOptions, openSessionFromFiles } from '../../compute/runtime/session';
import { type HostTensor, elementCount } from '../../model/tensor';
import {
  TRAIN_IO,
  type TrainingGraph,
  type TrainingGraphOptions,
  buildEvaluationGraph,
  buildTrainingGraph,
} from './graph';
import { initLoraWeights } from './lora';

// One training run inside the engine worker: the training graph's session plus the trainable
// tensors and AdamW moments, held as ORT tensors in two sets that swap roles every step (inputs
// of this step, preallocated outputs of the next), so steady-state steps allocate nothing.

export interface TrainingOptions extends TrainingGraphOptions, RuntimeSessionOptions {
  /** Seed of the fresh LoRA A matrices. Default 0. */
  seed?: number;
  /**
   * Also open a forward + loss session for evaluate() (held-out loss). It holds a second copy of
   * the frozen weights inside ONNX Runtime. Default false.
   */
  evaluation?: boolean;
}

/**
 * A batch of B rows. Either tokens [B, T+1] (inputs = tokens[:, :-1], targets = tokens[:, 1:]) or
 * tokens [B, T] (targets = tokens shifted left; the last position has no target and is masked).
 * lossMask [B, T] weights each target (1 = counts), aligned with the targets.
 */
export interface TrainingBatch {
  tokens: Int32Array | number[];
  lossMask?: Float32Array | number[];
  /** Positions of each input token [B, T]; default 0…T−1 in every row. */
  positions?: Int32Array | number[];
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  /** Targets that counted (Σ mask). */
  tokens: number;
  step: number;
  /** Wall time of the session run. */
  seconds: number;
}

export interface EvaluationResult {
  loss: number;
  /** Targets that counted (Σ mask). */
  tokens: number;
}

export interface OptimizerState {
  /** Steps taken (AdamW's t). */
  step: number;
  m: Record<string, HostTensor>;
  v: Record<string, HostTensor>;
}

interface StateSet {
  param: Map<string, ort.Tensor>;
  m: Map<string, ort.Tensor>;
  v: Map<string, ort.Tensor>;
}

type FloatArray = Float32Array | Float64Array;

export class TrainingSession {
  private current: StateSet;
  private spare: StateSet;
  private stepCount = 0;
  private readonly feeds: Record<string, ort.Tensor>;
  private readonly scalars: Record<string, ort.Tensor>;
  private readonly ArrayType: typeof Float32Array | typeof Float64Array;
  /** Raw gradients of the last step (only with exposeGradients). */
  lastGradients: Map<string, HostTensor> | undefined;

  private constructor(
    readonly built: TrainingGraph,
    private readonly session: ort.InferenceSession,
    initial: ReadonlyMap<string, HostTensor>,
    private readonly evaluationSession: ort.InferenceSession | undefined,
  ) {
    const { batch: B, seqLen: T, dtype } = built.options;
    this.ArrayType = dtype === 'float64' ? Float64Array : Float32Array;
    this.current = this.allocateSet();
    this.spare = this.allocateSet();
    this.setTrainable(Object.fromEntries(initial));
    this.feeds = {
      [TRAIN_IO.inputIds]: new ort.Tensor('int64', new BigInt64Array(B * T), [B, T]),
      [TRAIN_IO.positionIds]: new ort.Tensor('int64', new BigInt64Array(B * T), [B, T]),
      [TRAIN_IO.targets]: new ort.Tensor('int64', new BigInt64Array(B * T), [B, T]),
      [TRAIN_IO.lossMask]: new ort.Tensor(dtype, new this.ArrayType(B * T), [B, T]),
      [TRAIN_IO.learningRate]: new ort.Tensor(dtype, new this.ArrayType(1), []),
      [TRAIN_IO.step]: new ort.Tensor(dtype, new this.ArrayType(1), []),
    };
    this.scalars = {
      [TRAIN_IO.loss]: new ort.Tensor(dtype, new this.ArrayType(1), []),
      [TRAIN_IO.gradNorm]: new ort.Tensor(dtype, new this.ArrayType(1), []),
      [TRAIN_IO.tokenCount]: new ort.Tensor(dtype, new this.ArrayType(1), []),
    };
  }

  /** Builds the graph, opens the session and sets the initial trainable tensors. */
  static async create(
    cfg: ModelConfig,
    weights: ReadonlyMap<string, HostTensor>,
    options: TrainingOptions,
  ): Promise<TrainingSession> {
    // Training runs beside an editor and other work: no spinning unless asked (see RuntimeSessionOptions).
    options = { ...options, spinning: options.spinning ?? false };
    // Frozen weights go to files ONNX Runtime maps (openSessionFromFiles), so neither the graph nor
    // a serialized buffer holds a second copy of the model while the session lives.
    let built: TrainingGraph | undefined;
    const session = await openSessionFromFiles((sink) => {
      built = buildTrainingGraph(cfg, weights, options, sink);
      return serializeModel(built.graph);
    }, options);
    if (!built) throw new Error('training graph was not built');
    const initial = new Map<string, HostTensor>();
    if (options.trainable.method === 'lora') {
      for (const [name, tensor] of initLoraWeights(cfg, options.trainable.lora, options.seed ?? 0))
        initial.set(name, tensor);
    } else {
      for (const t of built.trainable) {
        const weight = weights.get(t.name);
        if (!weight) throw new Error(`checkpoint is missing weight ${t.name}`);
        initial.set(t.name, weight);
      }
    }
    const evaluation = options.evaluation
      ? await openSessionFromFiles(
          (sink) => serializeModel(buildEvaluationGraph(cfg, weights, options, sink).graph),
          options,
        )
      : undefined;
    return new TrainingSession(built, session, initial, evaluation);
  }

  get steps(): number {
    return this.stepCount;
  }

  /** One optimizer step: forward, backward, clip, AdamW, in one session.run(). */
  async step(batch: TrainingBatch, learningRate: number): Promise<StepResult> {
    if (!Number.isFinite(learningRate) || learningRate < 0)
      throw new Error(`learning rate must be a finite number ≥ 0, got ${learningRate}`);
    this.fillBatch(batch);
    (this.feeds[TRAIN_IO.learningRate].data as FloatArray)[0] = learningRate;
    (this.feeds[TRAIN_IO.step].data as FloatArray)[0] = this.stepCount + 1;
    const feeds: Record<string, ort.Tensor> = { ...this.feeds };
    const fetches: Record<string, ort.Tensor> = { ...this.scalars };
    for (const t of this.built.trainable) {
      feeds[t.name] = this.current.param.get(t.name)!;
      feeds[TRAIN_IO.m(t.name)] = this.current.m.get(t.name)!;
      feeds[TRAIN_IO.v(t.name)] = this.current.v.get(t.name)!;
      fetches[TRAIN_IO.next(t.name)] = this.spare.param.get(t.name)!;
      fetches[TRAIN_IO.next(TRAIN_IO.m(t.name))] = this.spare.m.get(t.name)!;
      fetches[TRAIN_IO.next(TRAIN_IO.v(t.name))] = this.spare.v.get(t.name)!;
    }
    if (this.built.options.exposeGradients) {
      for (const t of this.built.trainable) fetches[TRAIN_IO.grad(t.name)] = null as unknown as ort.Tensor;
    }
    const started = performance.now();
    const results = await this.session.run(feeds, fetches);
    const seconds = (performance.now() - started) / 1000;
    const loss = scalarOf(this.scalars[TRAIN_IO.loss]);
    const gradNorm = scalarOf(this.scalars[TRAIN_IO.gradNorm]);
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      // Keep the last good state: a NaN step must not poison the adapter.
      throw new Error(
        `training step ${this.stepCount + 1} diverged (loss ${loss}, grad norm ${gradNorm}); try a lower learning rate`,
      );
    }
    [this.current, this.spare] = [this.spare, this.current];
    this.stepCount++;
    if (this.built.options.exposeGradients) {
      this.lastGradients = new Map(
        this.built.trainable.map((t) => [t.name, copyOut(results[TRAIN_IO.grad(t.name)] as ort.Tensor)]),
      );
    }
    return { loss, gradNorm, tokens: scalarOf(this.scalars[TRAIN_IO.tokenCount]), step: this.stepCount, seconds };
  }

  /** Loss of a batch under the current trainable tensors, without a step (needs options.evaluation). */
  async evaluate(batch: TrainingBatch): Promise<EvaluationResult> {
    if (!this.evaluationSession) throw new Error('evaluate() needs a training session created with evaluation: true');
    this.fillBatch(batch);
    const feeds: Record<string, ort.Tensor> = {
      [TRAIN_IO.inputIds]: this.feeds[TRAIN_IO.inputIds],
      [TRAIN_IO.positionIds]: this.feeds[TRAIN_IO.positionIds],
      [TRAIN_IO.targets]: this.feeds[TRAIN_IO.targets],
      [TRAIN_IO.lossMask]: this.feeds[TRAIN_IO.lossMask],
    };
    for (const t of this.built.trainable) feeds[t.name] = this.current.param.get(t.name)!;
    const results = await this.evaluationSession.run(feeds);
    return {
      loss: scalarOf(results[TRAIN_IO.loss] as ort.Tensor),
      tokens: scalarOf(results[TRAIN_IO.tokenCount] as ort.Tensor),
    };
  }

  /** Copies of the trainable tensors (PEFT keys for LoRA, HF names for full). */
  getTrainable(): Record<string, HostTensor> {
    return Object.fromEntries(this.built.trainable.map((t) => [t.name, copyOut(this.current.param.get(t.name)!)]));
  }

  setTrainable(tensors: Record<string, HostTensor>): void {
    for (const t of this.built.trainable) {
      const tensor = tensors[t.name];
      if (!tensor) throw new Error(`missing trainable tensor ${t.name}`);
      copyInto(this.current.param.get(t.name)!, tensor, t.name);
    }
    const known = new Set(this.built.trainable.map((t) => t.name));
    const extra = Object.keys(tensors).filter((name) => !known.has(name));
    if (extra.length > 0) throw new Error(`unexpected trainable tensor ${extra[0]} (not in this training graph)`);
  }

  getOptimizerState(): OptimizerState {
    const m: Record<string, HostTensor> = {};
    const v: Record<string, HostTensor> = {};
    for (const t of this.built.trainable) {
      m[t.name] = copyOut(this.current.m.get(t.name)!);
      v[t.name] = copyOut(this.current.v.get(t.name)!);
    }
    return { step: this.stepCount, m, v };
  }

  setOptimizerState(state: OptimizerState): void {
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new Error(`optimizer step must be an integer ≥ 0, got ${state.step}`);
    for (const t of this.built.trainable) {
      const m = state.m[t.name];
      const v = state.v[t.name];
      if (!m || !v) throw new Error(`optimizer state is missing the moments of ${t.name}`);
      copyInto(this.current.m.get(t.name)!, m, `adam.m of ${t.name}`);
      copyInto(this.current.v.get(t.name)!, v, `adam.v of ${t.name}`);
    }
    this.stepCount = state.step;
  }

  async release(): Promise<void> {
    await this.session.release();
    await this.evaluationSession?.release();
  }

  private allocateSet(): StateSet {
    const dtype = this.built.options.dtype;
    const make = () =>
      new Map(
        this.built.trainable.map((t) => [
          t.name,
          new ort.Tensor(dtype, new this.ArrayType(elementCount(t.shape)), t.shape),
        ]),
      );
    return { param: make(), m: make(), v: make() };
  }

  private fillBatch(batch: TrainingBatch): void {
    const { batch: B, seqLen: T } = this.built.options;
    const tokens = batch.tokens;
    const inputIds = this.feeds[TRAIN_IO.inputIds].data as BigInt64Array;
    const targets = this.feeds[TRAIN_IO.targets].data as BigInt64Array;
    const mask = this.feeds[TRAIN_IO.lossMask].data as FloatArray;
    const shifted = tokens.length === B * (T + 1);
    if (!shifted && tokens.length !== B * T) {
      throw new Error(`batch has ${tokens.length} tokens; expected ${B}×${T + 1} (inputs + last target) or ${B}×${T}`);
    }
    if (batch.lossMask && batch.lossMask.length !== B * T)
      throw new Error(`loss mask has ${batch.lossMask.length} values; expected ${B}×${T}`);
    const vocab = this.built.vocabSize;
    const row = shifted ? T + 1 : T;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const i = b * T + t;
        const input = tokens[b * row + t];
        const hasTarget = shifted || t + 1 < T;
        const target = hasTarget ? tokens[b * row + t + 1] : 0;
        if (!Number.isInteger(input) || input < 0 || input >= vocab)
          throw new Error(`token id ${input} out of range [0, ${vocab})`);
        if (!Number.isInteger(target) || target < 0 || target >= vocab)
          throw new Error(`token id ${target} out of range [0, ${vocab})`);
        inputIds[i] = BigInt(input);
        targets[i] = BigInt(target);
        mask[i] = hasTarget ? (batch.lossMask ? batch.lossMask[i] : 1) : 0;
      }
    }
    if (batch.positions && batch.positions.length !== B * T)
      throw new Error(`positions have ${batch.positions.length} values; expected ${B}×${T}`);
    const positions = this.feeds[TRAIN_IO.positionIds].data as BigInt64Array;
    for (let i = 0; i < positions.length; i++) positions[i] = BigInt(batch.positions ? batch.positions[i] : i % T);
  }
}

function scalarOf(tensor: ort.Tensor): number {
  return Number((tensor.data as FloatArray)[0]);
}

function copyOut(tensor: ort.Tensor): HostTensor {
  const data = tensor.data as FloatArray;
  return { dtype: tensor.type as HostTensor['dtype'], shape: [...tensor.dims], data: data.slice() };
}

function copyInto(target: ort.Tensor, source: HostTensor, name: string): void {
  const same = source.shape.length === target.dims.length && source.shape.every((d, i) => d === target.dims[i]);
  if (!same) throw new Error(`${name}: shape [${source.shape.join(', ')}] does not match [${target.dims.join(', ')}]`);
  if (source.dtype !== 'float32' && source.dtype !== 'float64')
    throw new Error(`${name}: dtype ${source.dtype} is not a float type`);
  (target.data as FloatArray).set(source.data as FloatArray);
}
