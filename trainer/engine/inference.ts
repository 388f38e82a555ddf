/**
 * Inference graphs: one graph serves prefill (T tokens) and decode (T = 1) over a KV cache, built from fused contrib ops (no gradients needed here):
 *   GroupQueryAttention (packed QKV, RoPE inside, cache updated in place),
 *   SkipSimplifiedLayerNormalization (residual add + RMSNorm), packed q|k|v and gate|up weights,
 *   and fp32 / int8 (DynamicQuantizeMatMul) / int4 (MatMulNBits) weight MatMuls.
 *
 * Inputs:  input_ids int64 [1, T]; seqlens_k int32 [1] (= cached + T − 1);
 *          total_sequence_length int32 []; past_key.{i} / past_value.{i} float32 [1, KV, C, hd] (C: any capacity ≥ the context);
 *          with `loraInputs`: lora.{i}.{qkv|o|gate_up|down}.A [R, in] and .B [out, R] (R symbolic,
 *          scaling folded into B; see loraFeeds).
 * Outputs: logits [1, V] for the last position (or [1, T, V] with logits 'all'),
 *          present_key.{i} / present_value.{i} [1, KV, C, hd].
 * KvCacheSession binds each present_* output to the very tensor fed as past_*, so ORT writes the
 * new rows into the cache in place and nothing is copied per step.
 */

import * as ort from 'onnxruntime-node';
import { Graph, Value } from '../graph/graph';
import * as op from '../graph/ops';
import {
  EMBED_TOKENS_WEIGHT,
  FINAL_NORM_WEIGHT,
  LM_HEAD_WEIGHT,
  ModelConfig,
  Projection,
  layerNormWeightName,
  projectionBiasName,
  projectionModule,
  projectionShape,
  projectionWeightName,
} from '../model/config';
import { HostTensor } from '../tensor';
import { groupQueryAttention, rmsNormFused, skipRmsNorm } from './contrib-ops';
import { checkWeights, ropeTables } from './llama';
import { createSession } from './session';
import { LoraAdapter, Precision, concatRows, frozenLinear, mergeLora } from './weights';

export interface InferenceGraphOptions {
  /** Longest context (prompt + generated) in tokens; default and maximum: maxPositionEmbeddings. */
  maxContext?: number;
  precision?: Precision;
  /** Adds LoRA A/B inputs on every projection group, so adapters switch by feed. */
  loraInputs?: boolean;
  /** Folds this adapter into the weights (the fast path for a fixed adapter). */
  mergedAdapter?: LoraAdapter;
  /** 'last' (default): logits [1, V] of the last position; 'all': [1, T, V] (scoring). */
  logits?: 'last' | 'all';
}

/** Projections that read the same input, packed into one MatMul. */
export const PROJECTION_GROUPS = {
  qkv: ['q_proj', 'k_proj', 'v_proj'],
  o: ['o_proj'],
  gate_up: ['gate_proj', 'up_proj'],
  down: ['down_proj'],
} as const satisfies Record<string, readonly Projection[]>;
export type ProjectionGroup = keyof typeof PROJECTION_GROUPS;
const GROUPS = Object.keys(PROJECTION_GROUPS) as ProjectionGroup[];

export const pastKeyName = (layer: number) => `past_key.${layer}`;
export const pastValueName = (layer: number) => `past_value.${layer}`;
export const presentKeyName = (layer: number) => `present_key.${layer}`;
export const presentValueName = (layer: number) => `present_value.${layer}`;
export const loraGroupInputName = (layer: number, group: ProjectionGroup, which: 'A' | 'B') => `lora.${layer}.${group}.${which}`;

function groupWeight(cfg: ModelConfig, weights: ReadonlyMap<string, HostTensor>, layer: number, group: ProjectionGroup, adapter?: LoraAdapter): HostTensor {
  const parts = PROJECTION_GROUPS[group].map((projection) => {
    const weight = weights.get(projectionWeightName(layer, projection))!;
    const lora = adapter?.modules.get(projectionModule(layer, projection));
    return lora ? mergeLora(weight, lora, adapter!.scaling) : weight;
  });
  return parts.length === 1 ? parts[0] : concatRows(parts);
}

function groupShape(cfg: ModelConfig, group: ProjectionGroup): [number, number] {
  let out = 0;
  let inFeatures = 0;
  for (const projection of PROJECTION_GROUPS[group]) {
    const [o, i] = projectionShape(cfg, projection);
    out += o;
    inFeatures = i;
  }
  return [out, inFeatures];
}

export function buildInferenceGraph(cfg: ModelConfig, weights: ReadonlyMap<string, HostTensor>, options: InferenceGraphOptions): Graph {
  checkWeights(cfg, weights);
  const maxContext = options.maxContext ?? cfg.maxPositionEmbeddings;
  if (!(maxContext > 0 && maxContext <= cfg.maxPositionEmbeddings)) {
    throw new Error(`maxContext ${maxContext} must be in 1..${cfg.maxPositionEmbeddings} (max_position_embeddings)`);
  }
  const C = 'kv_capacity'; // the cache buffers grow in steps, so the graph takes any capacity
  const precision = options.precision ?? 'float32';
  const graph = new Graph('decoder');
  const D = cfg.hiddenSize;
  const KV = cfg.numKvHeads;
  const hd = cfg.headDim;
  const eps = cfg.rmsNormEps;
  const w = (name: string) => weights.get(name)!;

  const tokens = graph.input('input_ids', 'int64', [1, 'T']);
  const seqlensK = graph.input('seqlens_k', 'int32', [1]);
  const totalLength = graph.input('total_sequence_length', 'int32', []);
  const rope = ropeTables(cfg, maxContext);
  const rotary = { cos: graph.initializer('rope.cos', rope.cos), sin: graph.initializer('rope.sin', rope.sin) };

  const linear = (x: Value, layer: number, group: ProjectionGroup): Value => {
    const bias = group === 'qkv' && cfg.attentionBias
      ? concatRows((['q_proj', 'k_proj', 'v_proj'] as const).map((p) => w(projectionBiasName(layer, p))))
      : undefined;
    let y = frozenLinear(graph, x, `layer${layer}.${group}`, groupWeight(cfg, weights, layer, group, options.mergedAdapter), precision, bias);
    if (options.loraInputs) {
      const [outFeatures, inFeatures] = groupShape(cfg, group);
      const rank = `lora_rank_${group}`;
      const a = graph.input(loraGroupInputName(layer, group, 'A'), 'float32', [rank, inFeatures]);
      const b = graph.input(loraGroupInputName(layer, group, 'B'), 'float32', [outFeatures, rank]);
      y = op.add(y, op.fusedMatmul(op.fusedMatmul(x, a, { transB: true }), b, { transB: true }));
    }
    return y;
  };

  let residual = op.gather(graph.initializer(EMBED_TOKENS_WEIGHT, w(EMBED_TOKENS_WEIGHT)), tokens); // [1, T, D]
  let normed = rmsNormFused(residual, graph.initializer('layer0.input_layernorm', w(layerNormWeightName(0, 'input_layernorm'))), eps);
  let pending: Value | undefined; // the last block's output, not yet added to the residual
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    graph.scope(`layer${layer}`, () => {
      if (pending) {
        const gamma = graph.initializer(`layer${layer}.input_layernorm`, w(layerNormWeightName(layer, 'input_layernorm')));
        ({ normed, sum: residual } = skipRmsNorm(pending, residual, gamma, eps));
      }
      const qkv = linear(normed, layer, 'qkv'); // [1, T, (H + 2·KV)·hd]
      const pastKey = graph.input(pastKeyName(layer), 'float32', [1, KV, C, hd]);
      const pastValue = graph.input(pastValueName(layer), 'float32', [1, KV, C, hd]);
      const [attended, presentKey, presentValue] = groupQueryAttention(qkv, pastKey, pastValue, seqlensK, totalLength, {
        numHeads: cfg.numHeads,
        kvNumHeads: KV,
        headDim: hd,
        rotary,
      });
      graph.output(presentKey, presentKeyName(layer));
      graph.output(presentValue, presentValueName(layer));
      const postGamma = graph.initializer(`layer${layer}.post_attention_layernorm`, w(layerNormWeightName(layer, 'post_attention_layernorm')));
      const post = skipRmsNorm(linear(attended, layer, 'o'), residual, postGamma, eps);
      residual = post.sum;
      const [gate, up] = op.split(linear(post.normed, layer, 'gate_up'), -1, [cfg.intermediateSize, cfg.intermediateSize]);
      pending = linear(op.mul(op.mul(gate, op.sigmoid(gate)), up), layer, 'down'); // silu(gate) · up → down
    });
  }
  const finalGamma = graph.initializer(FINAL_NORM_WEIGHT, w(FINAL_NORM_WEIGHT));
  let hidden = skipRmsNorm(pending!, residual, finalGamma, eps).normed; // [1, T, D]
  if ((options.logits ?? 'last') === 'last') hidden = op.reshape(op.slice(hidden, [1], [-1], [Number.MAX_SAFE_INTEGER]), [1, D]);
  const head = w(cfg.tieWordEmbeddings ? EMBED_TOKENS_WEIGHT : LM_HEAD_WEIGHT);
  graph.output(frozenLinear(graph, hidden, 'lm_head', head, precision), 'logits');
  return graph;
}

/**
 * The per-token weight MatMuls of the decode graph alone (packed q|k|v, o, gate|up, down per
 * layer, and lm_head) at the same precision: what a decode step cannot go below.
 */
export function buildWeightMatmulGraph(cfg: ModelConfig, weights: ReadonlyMap<string, HostTensor>, precision: Precision): Graph {
  const graph = new Graph('weight_matmuls');
  const inputs = new Map<number, Value>();
  const inputOf = (features: number) => {
    if (!inputs.has(features)) inputs.set(features, graph.input(`x${features}`, 'float32', [1, features]));
    return inputs.get(features)!;
  };
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const group of GROUPS) {
      const weight = groupWeight(cfg, weights, layer, group);
      graph.output(frozenLinear(graph, inputOf(weight.shape[1]), `layer${layer}.${group}`, weight, precision), `y.${layer}.${group}`);
    }
  }
  const head = weights.get(cfg.tieWordEmbeddings ? EMBED_TOKENS_WEIGHT : LM_HEAD_WEIGHT)!;
  graph.output(frozenLinear(graph, inputOf(cfg.hiddenSize), 'lm_head', head, precision), 'logits');
  return graph;
}

/**
 * Feeds for a graph built with `loraInputs`: per layer and group, A = the targeted projections'
 * A stacked [ΣR, in], B = block matrix [out, ΣR] holding scaling·B of each projection in its rows.
 * `undefined` gives the zero-rank feeds (the base model).
 */
export function loraFeeds(cfg: ModelConfig, adapter: LoraAdapter | undefined): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const group of GROUPS) {
      const [outFeatures, inFeatures] = groupShape(cfg, group);
      const parts: { rowOffset: number; a: HostTensor; b: HostTensor }[] = [];
      let rowOffset = 0;
      for (const projection of PROJECTION_GROUPS[group]) {
        const lora = adapter?.modules.get(projectionModule(layer, projection));
        const [o, i] = projectionShape(cfg, projection);
        if (lora) {
          if (lora.a.shape[1] !== i || lora.b.shape[0] !== o || lora.a.shape[0] !== lora.b.shape[1]) {
            throw new Error(`adapter ${projectionModule(layer, projection)}: A [${lora.a.shape}] / B [${lora.b.shape}] do not fit [${o}, ${i}]`);
          }
          parts.push({ rowOffset, a: lora.a, b: lora.b });
        }
        rowOffset += o;
      }
      const rank = parts.reduce((sum, p) => sum + p.a.shape[0], 0);
      const a = new Float32Array(rank * inFeatures);
      const b = new Float32Array(outFeatures * rank);
      let column = 0;
      for (const part of parts) {
        const r = part.a.shape[0];
        a.set(part.a.data as Float32Array, column * inFeatures);
        const source = part.b.data as Float32Array;
        for (let row = 0; row < part.b.shape[0]; row++) {
          for (let k = 0; k < r; k++) b[(part.rowOffset + row) * rank + column + k] = adapter!.scaling * source[row * r + k];
        }
        column += r;
      }
      feeds[loraGroupInputName(layer, group, 'A')] = new ort.Tensor('float32', a, [rank, inFeatures]);
      feeds[loraGroupInputName(layer, group, 'B')] = new ort.Tensor('float32', b, [outFeatures, rank]);
    }
  }
  return feeds;
}

export interface KvCacheSessionOptions extends InferenceGraphOptions {
  threads?: number;
}

/** Cache buffers grow in steps of this many positions (plus doubling), so a step copies little. */
const CACHE_GROWTH = 64;

/**
 * A model with its KV cache: append tokens (a prompt, or one token per decode step) and read the
 * logits of the last position. The cache lives in JS-owned tensors that GroupQueryAttention
 * updates in place. onnxruntime-node still copies every fetched output into a new array after
 * each run, so the buffers are kept just larger than the context (grown on demand) to bound that
 * copy.
 */
export class KvCacheSession {
  private cached = 0;
  private capacity = 0;
  private readonly keys: Float32Array[] = [];
  private readonly values: Float32Array[] = [];
  private readonly feeds: Record<string, ort.Tensor> = {};
  private readonly fetches: Record<string, ort.Tensor> = {};
  private readonly seqlensK = new Int32Array(1);
  private readonly total = new Int32Array(1);
  private readonly oneToken = new BigInt64Array(1);
  private readonly oneTokenTensor: ort.Tensor;
  private readonly logits: Float32Array;

  private constructor(
    readonly cfg: ModelConfig,
    readonly maxContext: number,
    readonly hasLoraInputs: boolean,
    private readonly session: ort.InferenceSession,
  ) {
    this.feeds.seqlens_k = new ort.Tensor('int32', this.seqlensK, [1]);
    this.feeds.total_sequence_length = new ort.Tensor('int32', this.total, []);
    this.oneTokenTensor = new ort.Tensor('int64', this.oneToken, [1, 1]);
    this.logits = new Float32Array(cfg.vocabSize);
    this.fetches.logits = new ort.Tensor('float32', this.logits, [1, cfg.vocabSize]);
    if (hasLoraInputs) Object.assign(this.feeds, loraFeeds(cfg, undefined));
    this.reserve(CACHE_GROWTH);
  }

  static async create(cfg: ModelConfig, weights: ReadonlyMap<string, HostTensor>, options: KvCacheSessionOptions = {}): Promise<KvCacheSession> {
    if (options.logits === 'all') throw new Error('KvCacheSession reads last-position logits; build a scoring graph for all');
    const graph = buildInferenceGraph(cfg, weights, options);
    const session = await createSession(graph, { threads: options.threads });
    return new KvCacheSession(cfg, options.maxContext ?? cfg.maxPositionEmbeddings, options.loraInputs ?? false, session);
  }

  /** Tokens in the cache. */
  get length(): number {
    return this.cached;
  }

  /** Switches the adapter (graphs built with loraInputs); undefined = the base model. Keeps the cache. */
  setAdapter(adapter: LoraAdapter | undefined): void {
    if (!this.hasLoraInputs) throw new Error('this session was built without LoRA inputs (merged weights or base only)');
    Object.assign(this.feeds, loraFeeds(this.cfg, adapter));
  }

  /** Forgets cached tokens past `length` (KV-prefix reuse: keep a shared prompt prefix). */
  truncate(length: number): void {
    if (!(Number.isInteger(length) && length >= 0 && length <= this.cached)) {
      throw new Error(`cannot truncate a cache of ${this.cached} tokens to ${length}`);
    }
    this.cached = length;
  }

  /** Makes room for `needed` positions: new buffers [1, KV, C, hd] holding the cached rows. */
  private reserve(needed: number): void {
    if (needed <= this.capacity) return;
    const { numKvHeads: KV, headDim: hd, numLayers } = this.cfg;
    const grown = Math.max(needed, Math.min(2 * this.capacity, this.capacity + 1024));
    const capacity = Math.min(this.maxContext, Math.ceil(grown / CACHE_GROWTH) * CACHE_GROWTH);
    const shape = [1, KV, capacity, hd];
    for (let layer = 0; layer < numLayers; layer++) {
      for (const [store, past, present] of [
        [this.keys, pastKeyName(layer), presentKeyName(layer)],
        [this.values, pastValueName(layer), presentValueName(layer)],
      ] as const) {
        const buffer = new Float32Array(KV * capacity * hd);
        const old = store[layer];
        if (old) {
          for (let h = 0; h < KV; h++) {
            buffer.set(old.subarray(h * this.capacity * hd, (h * this.capacity + this.cached) * hd), h * capacity * hd);
          }
        }
        store[layer] = buffer;
        const tensor = new ort.Tensor('float32', buffer, shape);
        this.feeds[past] = tensor;
        this.fetches[present] = tensor; // the same buffer: GroupQueryAttention's in-place mode
      }
    }
    this.capacity = capacity;
  }

  /**
   * Runs `tokens` after the cached ones and returns the logits of the last one: a view that the
   * next call overwrites (copy it to keep it).
   */
  async append(tokens: ArrayLike<number>): Promise<Float32Array> {
    const T = tokens.length;
    if (T === 0) throw new Error('append needs at least one token');
    if (this.cached + T > this.maxContext) {
      throw new Error(`context of ${this.cached + T} tokens exceeds the model's limit of ${this.maxContext}`);
    }
    this.reserve(this.cached + T);
    if (T === 1) {
      this.oneToken[0] = BigInt(tokens[0]);
      this.feeds.input_ids = this.oneTokenTensor;
    } else {
      const ids = new BigInt64Array(T);
      for (let i = 0; i < T; i++) ids[i] = BigInt(tokens[i]);
      this.feeds.input_ids = new ort.Tensor('int64', ids, [1, T]);
    }
    this.total[0] = this.cached + T;
    this.seqlensK[0] = this.cached + T - 1;
    await this.session.run(this.feeds, this.fetches);
    this.cached += T;
    return this.logits;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
