/**
 * The inference graph: one graph serves prefill (T tokens), single-token decode over a KV cache,
 * and scoring (per-token NLL), built from fused ops where ONNX Runtime has them
 * (SkipSimplifiedLayerNormalization, RotaryEmbedding, packed q|k|v and gate|up weights,
 * fp32 / int8 / int4 (MatMulNBits) weight MatMuls) and attention from
 * FusedMatMul + Softmax.
 *
 * Why not GroupQueryAttention's in-place cache: onnxruntime-node copies every fetched output into
 * a fresh JS buffer after each run (measured: preallocated fetches are written and then copied
 * again), so a cache that is a graph output costs O(capacity) per token. Input feeds are not
 * copied, so here the cache is a JS-owned, position-major buffer per layer fed as a view of
 * exactly the cached rows, and only the new tokens' keys/values are outputs (fetched into the
 * cache buffer right after those rows). Per-token cost depends on the context, not on capacity.
 *
 * Inputs:  input_ids, position_ids int64 [1, T];
 *          past_key.{i} / past_value.{i} float32 [S, KV, 1, hd] (S ≥ 1: an empty cache is fed as
 *          one masked dummy row, because FusedMatMul crashes on zero-size operands);
 *          attention_bias float32 [T, S + T] (additive: 0 or MASKED_SCORE; causal among the new T);
 *          attention_split int64 [2] = [S, T];
 *          logit_rows int64 [P] (which of the T positions get logits), target_ids int64 [P];
 *          with `loraInputs`: lora.{i}.{qkv|o|gate_up|down}.A [R, in] and .B [out, R]
 *          (R symbolic, scaling folded into B; see loraFeeds).
 * Outputs: logits [1, P, V]; nll [P] = −log softmax(logits[p, :vocabLimit])[target_ids[p]];
 *          new_key.{i} (after RoPE) / new_value.{i} [T, KV, 1, hd].
 * ORT runs every node whatever is fetched, so decode feeds P = 1 with a dummy target (the NLL of
 * one row costs a LogSoftmax over V) and scoring simply does not fetch the logits.
 */

import * as ort from 'onnxruntime-node';
import { type Dim, Graph, type Value } from '../graph/graph';
import * as op from '../graph/ops';
import {
  EMBED_TOKENS_WEIGHT,
  FINAL_NORM_WEIGHT,
  LM_HEAD_WEIGHT,
  type ModelConfig,
  type Projection,
  headNormWeightName,
  layerNormWeightName,
  projectionBiasName,
  projectionModule,
  projectionShape,
  projectionWeightName,
} from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import { LazyWeights } from '../../model/lazy-weights';
import { fusedMatMulBatch, matMulNBits, rmsNormFused, skipRmsNorm } from './contrib-ops';
import { MASKED_SCORE, checkWeights, ropeTables } from './llama';
import type { RuntimeSessionOptions } from '../runtime/session';
import { createSession, createSessionFromFiles } from './session';
import { INT8_BLOCK } from '../../model/precision';
import { type LoraAdapter, type Precision, concatRows, frozenLinear, mergeLora, quantizeInt8 } from './weights';

export interface InferenceGraphOptions {
  /** Longest context (prompt + generated) in tokens; default and maximum: maxPositionEmbeddings. */
  maxContext?: number;
  precision?: Precision;
  /** Adds LoRA A/B inputs on every projection group, so adapters switch by feed. */
  loraInputs?: boolean;
  /** Folds this adapter into the weights (the fast path for a fixed adapter). */
  mergedAdapter?: LoraAdapter;
  /**
   * The NLL output normalizes over ids below this (the tokenizer's vocabulary; Qwen's model
   * vocabulary is padded past it). Default: the model's vocabulary.
   */
  vocabLimit?: number;
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
export const newKeyName = (layer: number) => `new_key.${layer}`;
export const newValueName = (layer: number) => `new_value.${layer}`;
export const loraGroupInputName = (layer: number, group: ProjectionGroup, which: 'A' | 'B') =>
  `lora.${layer}.${group}.${which}`;

function groupWeight(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  layer: number,
  group: ProjectionGroup,
  adapter?: LoraAdapter,
): HostTensor {
  const parts = PROJECTION_GROUPS[group].map((projection) => {
    const weight = weights.get(projectionWeightName(layer, projection))!;
    const lora = adapter?.modules.get(projectionModule(layer, projection));
    return lora ? mergeLora(weight, lora, adapter!.scaling) : weight;
  });
  return parts.length === 1 ? parts[0] : concatRows(parts);
}

/**
 * 1/√hd, folded into the query rows of the packed q|k|v weight (and bias, and LoRA B): RoPE is
 * linear, so the scores come out scaled with no Mul and no FusedMatMul alpha (alpha ≠ 1 sends
 * MLAS down its general, packing path: ~1.5× slower for a single decode row).
 */
const QUERY_SCALE = (headDim: number) => 1 / Math.sqrt(headDim);

/**
 * The factor on q_proj's rows: with qwen3's q_norm after the projection a row scale would be
 * normalized away, so there the scale goes into q_norm's weight instead.
 */
const queryRowScale = (cfg: ModelConfig) => (cfg.qkNorm ? 1 : QUERY_SCALE(cfg.headDim));

/** A copy of `tensor` ([rows, cols] or [rows]) with its first `rows` rows multiplied by `factor`. */
function scaleLeadingRows(tensor: HostTensor, rows: number, factor: number): HostTensor {
  const cols = tensor.shape.length === 2 ? tensor.shape[1] : 1;
  const data = Float32Array.from(tensor.data as Float32Array);
  for (let i = 0; i < rows * cols; i++) data[i] *= factor;
  return { dtype: 'float32', shape: tensor.shape, data };
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

/**
 * The token embedding and the logits head. Quantized, the embedding is the int8 block table of
 * the head's MatMulNBits ([V, D/128, 128], a scale per block): rows are gathered, then scaled, so
 * no float32 copy of it is held, and a tied head at int8 multiplies by the same table.
 */
function embeddingAndHead(
  graph: Graph,
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  precision: Precision,
): { embed: (tokens: Value) => Value; head: (rows: Value) => Value } {
  const table = weights.get(EMBED_TOKENS_WEIGHT)!;
  if (precision === 'float32') {
    const embedding = graph.initializer(EMBED_TOKENS_WEIGHT, table);
    const head = cfg.tieWordEmbeddings ? table : weights.get(LM_HEAD_WEIGHT)!;
    return {
      embed: (tokens) => op.gather(embedding, tokens),
      head: (rows) => frozenLinear(graph, rows, 'lm_head', head, precision),
    };
  }
  const [V, D] = table.shape;
  const q = quantizeInt8(table);
  const blocks = q.packed.shape[1];
  const packed = graph.initializer(`${EMBED_TOKENS_WEIGHT}.int8`, q.packed);
  const blockScales = graph.initializer(`${EMBED_TOKENS_WEIGHT}.scales`, q.scales);
  const embed = (tokens: Value) => {
    const codes = op.cast(op.gather(packed, tokens), 'float32'); // [1, T, blocks, 128]
    const scales = op.gather(op.reshape(blockScales, [V, blocks, 1]), tokens); // [1, T, blocks, 1]
    const rows = op.reshape(op.mul(op.sub(codes, op.scalar(graph, 128)), scales), [0, 0, blocks * INT8_BLOCK]);
    return blocks * INT8_BLOCK === D ? rows : op.slice(rows, [2], [0], [D]); // [1, T, D]
  };
  if (precision === 'int8' && cfg.tieWordEmbeddings) {
    return {
      embed,
      head: (rows) => matMulNBits(rows, packed, blockScales, { K: D, N: V, bits: 8, blockSize: INT8_BLOCK }),
    };
  }
  const headName = cfg.tieWordEmbeddings ? EMBED_TOKENS_WEIGHT : LM_HEAD_WEIGHT;
  return { embed, head: (rows) => frozenLinear(graph, rows, 'lm_head', weights.get(headName)!, precision) };
}

export function buildInferenceGraph(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: InferenceGraphOptions,
  /** Where the frozen weights go as they are made (Graph.weightSink). */
  weightSink?: Graph['weightSink'],
): Graph {
  // Lazy weights were checked against config.json when opened; checking reads each tensor.
  if (!(weights instanceof LazyWeights)) checkWeights(cfg, weights);
  const maxContext = options.maxContext ?? cfg.maxPositionEmbeddings;
  if (!(maxContext > 0 && maxContext <= cfg.maxPositionEmbeddings)) {
    throw new Error(`maxContext ${maxContext} must be in 1..${cfg.maxPositionEmbeddings} (max_position_embeddings)`);
  }
  const vocabLimit = options.vocabLimit ?? cfg.vocabSize;
  if (!(Number.isInteger(vocabLimit) && vocabLimit > 0 && vocabLimit <= cfg.vocabSize)) {
    throw new Error(
      `vocabLimit ${options.vocabLimit} must be an integer in 1..${cfg.vocabSize} (the model's vocabulary)`,
    );
  }
  const precision = options.precision ?? 'float32';
  const graph = new Graph('decoder');
  graph.weightSink = weightSink;
  const H = cfg.numHeads;
  const KV = cfg.numKvHeads;
  const G = H / KV;
  const hd = cfg.headDim;
  const eps = cfg.rmsNormEps;
  const w = (name: string) => weights.get(name)!;

  const tokens = graph.input('input_ids', 'int64', [1, 'T']);
  const positions = graph.input('position_ids', 'int64', [1, 'T']);
  const bias = graph.input('attention_bias', 'float32', ['T', 'context']); // [T, S + T]
  const attentionSplit = graph.input('attention_split', 'int64', [2]); // [S, T]
  const logitRows = graph.input('logit_rows', 'int64', ['P']);
  const targets = graph.input('target_ids', 'int64', ['P']);
  const rope = ropeTables(cfg, maxContext);
  const cos = graph.initializer('rope.cos', rope.cos);
  const sin = graph.initializer('rope.sin', rope.sin);

  const linear = (x: Value, layer: number, group: ProjectionGroup): Value => {
    let weight = groupWeight(cfg, weights, layer, group, options.mergedAdapter);
    let bias =
      group === 'qkv' && cfg.attentionBias
        ? concatRows((['q_proj', 'k_proj', 'v_proj'] as const).map((p) => w(projectionBiasName(layer, p))))
        : undefined;
    if (group === 'qkv' && queryRowScale(cfg) !== 1) {
      weight = scaleLeadingRows(weight, H * hd, queryRowScale(cfg));
      if (bias) bias = scaleLeadingRows(bias, H * hd, queryRowScale(cfg));
    }
    let y = frozenLinear(graph, x, `layer${layer}.${group}`, weight, precision, bias);
    if (options.loraInputs) {
      const [outFeatures, inFeatures] = groupShape(cfg, group);
      const rank = `lora_rank_${group}`;
      const a = graph.input(loraGroupInputName(layer, group, 'A'), 'float32', [rank, inFeatures]);
      const b = graph.input(loraGroupInputName(layer, group, 'B'), 'float32', [outFeatures, rank]);
      y = op.add(y, op.fusedMatmul(op.fusedMatmul(x, a, { transB: true }), b, { transB: true }));
    }
    return y;
  };

  /** Reshape to `shape`, where the one symbolic dim ('T') is inferred (-1) and keeps its name. */
  const reshapeTo = (x: Value, shape: Dim[], exactName?: string): Value => {
    const target = op.int64s(
      graph,
      shape.map((d) => (typeof d === 'number' ? d : -1)),
      'shape',
    );
    return graph.node(
      'Reshape',
      [x, target],
      {},
      [{ dtype: x.dtype, shape }],
      exactName ?? 'reshape',
      exactName !== undefined,
    )[0];
  };

  /** qwen3's RMSNorm over each head of x [1, T, heads·hd]. */
  const headNorm = (x: Value, gamma: Value, heads: number): Value =>
    op.reshape(rmsNormFused(op.reshape(x, [0, 0, heads, hd]), gamma, eps), [0, 0, heads * hd]);

  /** Causal attention of the T new positions over S cached + T new keys; the cache is read in place. */
  const attention = (qkv: Value, layer: number): Value => {
    let [q, k, v] = op.split(qkv, -1, [H * hd, KV * hd, KV * hd]); // [1, T, ·]
    if (cfg.qkNorm) {
      const qGamma = scaleLeadingRows(w(headNormWeightName(layer, 'q_norm')), hd, QUERY_SCALE(hd));
      q = headNorm(q, graph.initializer(`layer${layer}.q_norm`, qGamma), H);
      k = headNorm(k, graph.initializer(`layer${layer}.k_norm`, w(headNormWeightName(layer, 'k_norm'))), KV);
    }
    const qRotated = op.rotaryEmbedding(q, positions, cos, sin, H);
    const kRotated = op.rotaryEmbedding(k, positions, cos, sin, KV);
    const pastKey = graph.input(pastKeyName(layer), 'float32', ['past', KV, 1, hd]);
    const pastValue = graph.input(pastValueName(layer), 'float32', ['past', KV, 1, hd]);
    const q4 = reshapeTo(qRotated, ['T', KV, G, hd]); // head h = kv·G + g (HF repeat_kv)
    // Named as the outputs themselves: an Identity per output would cost a kernel launch per token.
    const k4 = graph.output(reshapeTo(kRotated, ['T', KV, 1, hd], newKeyName(layer)));
    const v4 = graph.output(reshapeTo(v, ['T', KV, 1, hd], newValueName(layer)));
    // alpha stays 1 (q is pre-scaled): MLAS takes its fast single-row path only for alpha = 1.
    const scoreOptions = { transB: true, transBatchA: true, transBatchB: true };
    const pastScores = fusedMatMulBatch(q4, pastKey, scoreOptions, [KV, G, 'T', 'past'], 'past_scores');
    const newScores = fusedMatMulBatch(q4, k4, scoreOptions, [KV, G, 'T', 'T'], 'new_scores');
    const joined = graph.node(
      'Concat',
      [pastScores, newScores],
      { axis: -1 },
      [{ dtype: 'float32', shape: [KV, G, 'T', 'context'] }],
      'scores',
    )[0];
    const scores = op.add(joined, bias); // [KV, G, T, S + T]
    const [pastProbs, newProbs] = graph.node(
      'Split',
      [op.softmax(scores, -1), attentionSplit],
      { axis: 3 },
      [
        { dtype: 'float32', shape: [KV, G, 'T', 'past'] },
        { dtype: 'float32', shape: [KV, G, 'T', 'T'] },
      ],
      'probs',
    );
    const context = op.add(
      fusedMatMulBatch(pastProbs, pastValue, { transBatchB: true }, [KV, G, 'T', hd], 'past_context'),
      fusedMatMulBatch(newProbs, v4, { transBatchB: true }, [KV, G, 'T', hd], 'new_context'),
    ); // [KV, G, T, hd]
    return reshapeTo(op.transpose(context, [2, 0, 1, 3]), [1, 'T', H * hd]); // [1, T, H·hd]
  };

  const embedding = embeddingAndHead(graph, cfg, weights, precision);
  let residual = embedding.embed(tokens); // [1, T, D]
  let normed = rmsNormFused(
    residual,
    graph.initializer('layer0.input_layernorm', w(layerNormWeightName(0, 'input_layernorm'))),
    eps,
  );
  let pending: Value | undefined; // the last block's output, not yet added to the residual
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    graph.scope(`layer${layer}`, () => {
      if (pending) {
        const gamma = graph.initializer(
          `layer${layer}.input_layernorm`,
          w(layerNormWeightName(layer, 'input_layernorm')),
        );
        ({ normed, sum: residual } = skipRmsNorm(pending, residual, gamma, eps));
      }
      const attended = attention(linear(normed, layer, 'qkv'), layer); // [1, T, H·hd]
      const postGamma = graph.initializer(
        `layer${layer}.post_attention_layernorm`,
        w(layerNormWeightName(layer, 'post_attention_layernorm')),
      );
      const post = skipRmsNorm(linear(attended, layer, 'o'), residual, postGamma, eps);
      residual = post.sum;
      const [gate, up] = op.split(linear(post.normed, layer, 'gate_up'), -1, [
        cfg.intermediateSize,
        cfg.intermediateSize,
      ]);
      pending = linear(op.mul(op.mul(gate, op.sigmoid(gate)), up), layer, 'down'); // silu(gate) · up → down
    });
  }
  const finalGamma = graph.initializer(FINAL_NORM_WEIGHT, w(FINAL_NORM_WEIGHT));
  const hidden = skipRmsNorm(pending!, residual, finalGamma, eps).normed; // [1, T, D]
  const rows = op.gather(hidden, logitRows, 1); // [1, P, D]
  const logits = embedding.head(rows); // [1, P, V]
  graph.output(logits, 'logits');
  const scored = vocabLimit < cfg.vocabSize ? op.slice(logits, [2], [0], [vocabLimit]) : logits;
  const picked = op.gatherElements(op.logSoftmax(scored, -1), op.unsqueeze(targets, [0, 2]), 2); // [1, P, 1]
  graph.output(op.mul(op.reshape(picked, [-1]), op.scalar(graph, -1)), 'nll');
  return graph;
}

/**
 * The per-token weight MatMuls of the decode graph alone (packed q|k|v, o, gate|up, down per
 * layer, and lm_head) at the same precision: what a decode step cannot go below.
 */
export function buildWeightMatmulGraph(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  precision: Precision,
): Graph {
  const graph = new Graph('weight_matmuls');
  const inputs = new Map<number, Value>();
  const inputOf = (features: number) => {
    if (!inputs.has(features)) inputs.set(features, graph.input(`x${features}`, 'float32', [1, features]));
    return inputs.get(features)!;
  };
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const group of GROUPS) {
      const weight = groupWeight(cfg, weights, layer, group);
      graph.output(
        frozenLinear(graph, inputOf(weight.shape[1]), `layer${layer}.${group}`, weight, precision),
        `y.${layer}.${group}`,
      );
    }
  }
  const head = weights.get(cfg.tieWordEmbeddings ? EMBED_TOKENS_WEIGHT : LM_HEAD_WEIGHT)!;
  graph.output(frozenLinear(graph, inputOf(cfg.hiddenSize), 'lm_head', head, precision), 'logits');
  return graph;
}

/**
 * Feeds for a graph built with `loraInputs`: per layer and group, A = the targeted projections'
 * A stacked [ΣR, in], B = block matrix [out, ΣR] holding scaling·B of each projection in its rows
 * (q_proj's also times 1/√hd where the graph's query weight is, see queryRowScale).
 * `undefined` gives the zero-rank feeds (the base model).
 */
export function loraFeeds(cfg: ModelConfig, adapter: LoraAdapter | undefined): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const group of GROUPS) {
      const [outFeatures, inFeatures] = groupShape(cfg, group);
      const parts: { rowOffset: number; a: HostTensor; b: HostTensor; factor: number }[] = [];
      let rowOffset = 0;
      for (const projection of PROJECTION_GROUPS[group]) {
        const lora = adapter?.modules.get(projectionModule(layer, projection));
        const [o, i] = projectionShape(cfg, projection);
        if (lora) {
          if (lora.a.shape[1] !== i || lora.b.shape[0] !== o || lora.a.shape[0] !== lora.b.shape[1]) {
            throw new Error(
              `adapter ${projectionModule(layer, projection)}: A [${lora.a.shape}] / B [${lora.b.shape}] do not fit [${o}, ${i}]`,
            );
          }
          const factor = adapter!.scaling * (projection === 'q_proj' ? queryRowScale(cfg) : 1);
          parts.push({ rowOffset, a: lora.a, b: lora.b, factor });
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
          for (let k = 0; k < r; k++) b[(part.rowOffset + row) * rank + column + k] = part.factor * source[row * r + k];
        }
        column += r;
      }
      feeds[loraGroupInputName(layer, group, 'A')] = new ort.Tensor('float32', a, [rank, inFeatures]);
      feeds[loraGroupInputName(layer, group, 'B')] = new ort.Tensor('float32', b, [outFeatures, rank]);
    }
  }
  return feeds;
}

export interface KvCacheSessionOptions
  extends InferenceGraphOptions,
    Pick<RuntimeSessionOptions, 'threads' | 'profilePrefix' | 'spinning' | 'sessionConfig'> {}

/** Tokens per run at most (prefill and scoring), bounding the [H, T, S + T] attention scores. */
const MAX_CHUNK = 512;

/** Cache buffers start at this many positions and double as needed (up to maxContext). */
const INITIAL_CAPACITY = 256;

/**
 * Keys/values of a token sequence: per layer one position-major buffer [capacity, KV·hd] for
 * keys (after RoPE) and one for values. Rows past `length` are stale.
 */
export class KvCache {
  length = 0;
  capacity = 0;
  readonly keys: Float32Array[] = [];
  readonly values: Float32Array[] = [];

  constructor(
    readonly numLayers: number,
    /** KV · hd */
    readonly rowSize: number,
    readonly maxContext: number,
  ) {}

  /** Makes room for `needed` positions, keeping the cached rows (amortized: capacity doubles). */
  reserve(needed: number): void {
    if (needed <= this.capacity) return;
    const capacity = Math.min(this.maxContext, Math.max(needed, 2 * this.capacity, INITIAL_CAPACITY));
    for (const store of [this.keys, this.values]) {
      for (let layer = 0; layer < this.numLayers; layer++) {
        const buffer = new Float32Array(capacity * this.rowSize);
        if (store[layer]) buffer.set(store[layer].subarray(0, this.length * this.rowSize));
        store[layer] = buffer;
      }
    }
    this.capacity = capacity;
  }
}

export interface NllOptions {
  /** Score with the base model (zero-rank LoRA feeds) instead of the current adapter. */
  base?: boolean;
  /** Positions per run (bounds the [chunk, V] logits); default from the vocabulary size. */
  chunkTokens?: number;
}

/**
 * A model with its KV cache: append tokens (a prompt, or one token per decode step) and read the
 * logits of the last position; or score a sequence (per-token NLL) with a separate cache, so the
 * generation cache and its prefix survive scoring.
 */
export class KvCacheSession {
  private readonly cache: KvCache;
  private scoringCache: KvCache | undefined;
  private adapterFeeds: Record<string, ort.Tensor> = {};
  private baseFeeds: Record<string, ort.Tensor> | undefined;
  private readonly rowShape: number[];
  /** A zeroed row fed as the past when the cache is empty (masked out by the bias). */
  private readonly dummyRow: ort.Tensor;
  private zeros = new Float32Array(0);
  private biasScratch = new Float32Array(0);
  private readonly logits: Float32Array;
  private readonly logitsTensor: ort.Tensor;
  private readonly decodeFeeds: Record<string, ort.Tensor>;
  private readonly oneToken = new BigInt64Array(1);
  private readonly onePosition = new BigInt64Array(1);
  private readonly decodeSplit = new BigInt64Array(2);
  private tail: Promise<void> = Promise.resolve();

  private constructor(
    readonly cfg: ModelConfig,
    readonly maxContext: number,
    readonly hasLoraInputs: boolean,
    private readonly merged: boolean,
    /** Ids the NLL normalizes over (and scoring accepts). */
    readonly vocabLimit: number,
    private readonly session: ort.InferenceSession,
  ) {
    const rowSize = cfg.numKvHeads * cfg.headDim;
    this.cache = new KvCache(cfg.numLayers, rowSize, maxContext);
    this.rowShape = [cfg.numKvHeads, 1, cfg.headDim];
    this.dummyRow = new ort.Tensor('float32', new Float32Array(rowSize), [1, ...this.rowShape]);
    this.logits = new Float32Array(cfg.vocabSize);
    this.logitsTensor = new ort.Tensor('float32', this.logits, [1, 1, cfg.vocabSize]);
    if (hasLoraInputs) this.adapterFeeds = loraFeeds(cfg, undefined);
    this.decodeFeeds = {
      input_ids: new ort.Tensor('int64', this.oneToken, [1, 1]),
      position_ids: new ort.Tensor('int64', this.onePosition, [1, 1]),
      attention_split: new ort.Tensor('int64', this.decodeSplit, [2]),
      logit_rows: new ort.Tensor('int64', new BigInt64Array(1), [1]),
      target_ids: new ort.Tensor('int64', new BigInt64Array(1), [1]),
    };
    this.cache.reserve(1);
  }

  static async create(
    cfg: ModelConfig,
    weights: ReadonlyMap<string, HostTensor>,
    options: KvCacheSessionOptions = {},
  ): Promise<KvCacheSession> {
    // Weights read lazily are a large model's: built, written and dropped before ORT loads them.
    const runtime: RuntimeSessionOptions = {
      threads: options.threads,
      profilePrefix: options.profilePrefix,
      spinning: options.spinning,
      sessionConfig: options.sessionConfig,
    };
    const session =
      weights instanceof LazyWeights
        ? await createSessionFromFiles((sink) => buildInferenceGraph(cfg, weights, options, sink), runtime)
        : await createSession(buildInferenceGraph(cfg, weights, options), runtime);
    const maxContext = options.maxContext ?? cfg.maxPositionEmbeddings;
    const vocabLimit = options.vocabLimit ?? cfg.vocabSize;
    return new KvCacheSession(
      cfg,
      maxContext,
      options.loraInputs ?? false,
      options.mergedAdapter !== undefined,
      vocabLimit,
      session,
    );
  }

  /** Tokens in the cache. */
  get length(): number {
    return this.cache.length;
  }

  /** Positions the cache buffers hold now (they grow on demand). */
  get capacity(): number {
    return this.cache.capacity;
  }

  /** Switches the adapter (graphs built with loraInputs); undefined = the base model. Keeps the cache. */
  setAdapter(adapter: LoraAdapter | undefined): void {
    if (!this.hasLoraInputs)
      throw new Error('this session was built without LoRA inputs (merged weights or base only)');
    this.adapterFeeds = loraFeeds(this.cfg, adapter);
  }

  /** Forgets cached tokens past `length` (KV-prefix reuse: keep a shared prompt prefix). */
  truncate(length: number): void {
    if (!(Number.isInteger(length) && length >= 0 && length <= this.cache.length)) {
      throw new Error(`cannot truncate a cache of ${this.cache.length} tokens to ${length}`);
    }
    this.cache.length = length;
  }

  /**
   * Runs `tokens` after the cached ones and returns the logits of the last one: a view that the
   * next call overwrites (copy it to keep it).
   */
  append(tokens: ArrayLike<number>): Promise<Float32Array> {
    return this.exclusive(() => this.appendNow(tokens));
  }

  /**
   * Runs one operation at a time: run() starts the native call on a later tick, and the feeds
   * share scratch buffers, so a score call must not slip between a generation's feeds and its run.
   */
  private exclusive<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.tail.then(operation);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private async appendNow(tokens: ArrayLike<number>): Promise<Float32Array> {
    const total = tokens.length;
    if (total === 0) throw new Error('append needs at least one token');
    this.checkRoom(this.cache, total);
    // Long prompts run in chunks: attention scores are [H, T, S + T] per layer.
    for (let start = 0; start < total; start += MAX_CHUNK) {
      const piece =
        total <= MAX_CHUNK ? tokens : (Array.prototype.slice.call(tokens, start, start + MAX_CHUNK) as number[]);
      const T = piece.length;
      const feeds = T === 1 ? this.decodeStepFeeds(piece[0]) : this.chunkFeeds(this.cache, piece, [T - 1], [0]);
      const fetches = this.newRowFetches(this.cache, T);
      fetches.logits = this.logitsTensor;
      await this.session.run(this.withPast(this.cache, feeds, this.adapterFeeds), fetches);
      this.cache.length += T;
    }
    return this.logits;
  }

  /**
   * Negative log-likelihood (nats) of each token given the ones before it: result[i] =
   * −log p(tokens[i + 1] | tokens[0..i]), length tokens.length − 1. Runs in chunks over its own
   * cache; the generation cache is untouched.
   */
  nll(tokens: ArrayLike<number>, options: NllOptions = {}): Promise<Float32Array> {
    return this.exclusive(() => this.nllNow(tokens, options));
  }

  private async nllNow(tokens: ArrayLike<number>, options: NllOptions): Promise<Float32Array> {
    const n = tokens.length;
    if (n < 2) throw new Error(`scoring needs at least 2 tokens, got ${n}`);
    if (n > this.maxContext)
      throw new Error(`a scoring window of ${n} tokens exceeds the model's limit of ${this.maxContext}`);
    for (let i = 0; i < n; i++) {
      const id = tokens[i];
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabLimit))
        throw new Error(`token id ${id} at position ${i} is outside the vocabulary (${this.vocabLimit} ids)`);
    }
    let lora = this.adapterFeeds;
    if (options.base) {
      if (this.merged)
        throw new Error('this session has an adapter merged into its weights: it cannot score the base model');
      if (this.hasLoraInputs) lora = this.baseFeeds ??= loraFeeds(this.cfg, undefined);
    }
    // [chunk, V] logits (and their log-softmax) stay within ~64 MB each.
    const chunk = options.chunkTokens ?? Math.max(16, Math.min(MAX_CHUNK, Math.floor(2 ** 24 / this.cfg.vocabSize)));
    if (!(Number.isInteger(chunk) && chunk > 0))
      throw new Error(`chunkTokens must be a positive integer, got ${chunk}`);
    const cache = (this.scoringCache ??= new KvCache(this.cfg.numLayers, this.cache.rowSize, this.maxContext));
    cache.length = 0;
    const result = new Float32Array(n - 1);
    for (let start = 0; start < n - 1; start += chunk) {
      const end = Math.min(n - 1, start + chunk); // positions start..end−1 predict start+1..end
      const piece = Array.prototype.slice.call(tokens, start, end) as number[];
      const rows = piece.map((_, i) => i);
      const targets = piece.map((_, i) => tokens[start + i + 1]);
      this.checkRoom(cache, piece.length);
      const fetches = this.newRowFetches(cache, piece.length);
      const out = await this.session.run(this.withPast(cache, this.chunkFeeds(cache, piece, rows, targets), lora), {
        ...fetches,
        nll: null,
      });
      result.set(out.nll.data as Float32Array, start);
      cache.length += piece.length;
    }
    return result;
  }

  private checkRoom(cache: KvCache, T: number): void {
    if (cache.length + T > this.maxContext) {
      throw new Error(`context of ${cache.length + T} tokens exceeds the model's limit of ${this.maxContext}`);
    }
    cache.reserve(cache.length + T);
  }

  private decodeStepFeeds(token: number): Record<string, ort.Tensor> {
    const S = this.cache.length;
    this.oneToken[0] = BigInt(token);
    this.onePosition[0] = BigInt(S);
    this.decodeSplit[0] = BigInt(Math.max(S, 1));
    this.decodeSplit[1] = 1n;
    const feeds = { ...this.decodeFeeds };
    feeds.attention_bias = S === 0 ? this.biasTensor(0, 1) : new ort.Tensor('float32', this.zeroRow(S + 1), [1, S + 1]);
    return feeds;
  }

  /** A zeroed view of `length` floats (decode's bias: every cached and the new position visible). */
  private zeroRow(length: number): Float32Array {
    if (this.zeros.length < length) this.zeros = new Float32Array(Math.max(length, 2 * this.zeros.length));
    return this.zeros.subarray(0, length);
  }

  /** Additive bias [T, S' + T] for T new tokens after S cached ones (S' = max(S, 1): the dummy row is masked). */
  private biasTensor(S: number, T: number): ort.Tensor {
    const past = Math.max(S, 1);
    const width = past + T;
    if (this.biasScratch.length < T * width) this.biasScratch = new Float32Array(T * width);
    const bias = this.biasScratch.subarray(0, T * width);
    bias.fill(0);
    for (let t = 0; t < T; t++) {
      if (S === 0) bias[t * width] = MASKED_SCORE;
      bias.fill(MASKED_SCORE, t * width + past + t + 1, (t + 1) * width);
    }
    return new ort.Tensor('float32', bias, [T, width]);
  }

  private chunkFeeds(
    cache: KvCache,
    tokens: ArrayLike<number>,
    rows: number[],
    targets: number[],
  ): Record<string, ort.Tensor> {
    const T = tokens.length;
    const S = cache.length;
    const ids = new BigInt64Array(T);
    const positions = new BigInt64Array(T);
    for (let i = 0; i < T; i++) {
      ids[i] = BigInt(tokens[i]);
      positions[i] = BigInt(S + i);
    }
    return {
      input_ids: new ort.Tensor('int64', ids, [1, T]),
      position_ids: new ort.Tensor('int64', positions, [1, T]),
      attention_bias: this.biasTensor(S, T),
      attention_split: new ort.Tensor('int64', BigInt64Array.from([BigInt(Math.max(S, 1)), BigInt(T)]), [2]),
      logit_rows: new ort.Tensor('int64', BigInt64Array.from(rows, BigInt), [rows.length]),
      target_ids: new ort.Tensor('int64', BigInt64Array.from(targets, BigInt), [targets.length]),
    };
  }

  /** Adds the cached rows (views, not copies) and the LoRA feeds. */
  private withPast(
    cache: KvCache,
    feeds: Record<string, ort.Tensor>,
    lora: Record<string, ort.Tensor>,
  ): Record<string, ort.Tensor> {
    const S = cache.length;
    const rows = S * cache.rowSize;
    for (let layer = 0; layer < this.cfg.numLayers; layer++) {
      feeds[pastKeyName(layer)] =
        S === 0 ? this.dummyRow : new ort.Tensor('float32', cache.keys[layer].subarray(0, rows), [S, ...this.rowShape]);
      feeds[pastValueName(layer)] =
        S === 0
          ? this.dummyRow
          : new ort.Tensor('float32', cache.values[layer].subarray(0, rows), [S, ...this.rowShape]);
    }
    return Object.assign(feeds, lora);
  }

  /** The new rows' outputs land straight in the cache, right after the cached rows. */
  private newRowFetches(cache: KvCache, T: number): Record<string, ort.Tensor | null> {
    const fetches: Record<string, ort.Tensor | null> = {};
    const from = cache.length * cache.rowSize;
    const to = from + T * cache.rowSize;
    for (let layer = 0; layer < this.cfg.numLayers; layer++) {
      fetches[newKeyName(layer)] = new ort.Tensor('float32', cache.keys[layer].subarray(from, to), [
        T,
        ...this.rowShape,
      ]);
      fetches[newValueName(layer)] = new ort.Tensor('float32', cache.values[layer].subarray(from, to), [
        T,
        ...this.rowShape,
      ]);
    }
    return fetches;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
