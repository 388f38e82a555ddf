/**
 * The Llama / Qwen2 / Qwen3 forward pass as a graph, built only from plain ops that autodiff has rules
 * for (MatMul, FusedMatMul, Add, Sub, Mul, Div, Sqrt, Reciprocal, ReduceMean, Sigmoid, Softmax,
 * Gather, Reshape, Transpose, Split, Concat, Unsqueeze, Greater, Where). Shared by training
 * (forward → loss → autodiff, training/ort/graph.ts) and by the engine's reference path; the inference graphs with a KV
 * cache and fused contrib ops live in inference.ts.
 *
 *   const g = new Graph('train');
 *   const fwd = buildForward(g, cfg, weights, { batch: 8, seqLen: 256, lora: { targets: ['q_proj', 'v_proj'], rank: 16, scaling: 2 } });
 *   fwd.tokens        // input  'input_ids'    int64 [B, T]
 *   fwd.positions     // input  'position_ids' int64 [B, T]
 *   fwd.logits        // [B, T, V]   (not marked as a graph output: the caller decides)
 *   fwd.hidden        // [B, T, D]   after the final RMSNorm, before lm_head
 *   fwd.loraInputs    // module path → { a: input [r, in], b: input [out, r] } (PEFT names, see loraInputName)
 *   fwd.weightInputs  // HF weight name → graph input, for weights made trainable (full fine-tuning)
 *
 * Layout follows Hugging Face: Linear weights are [out, in] and y = x Wᵀ + b (FusedMatMul transB,
 * so weights keep their checkpoint names and layout). Frozen weights become external-data
 * initializers under their HF names; trainable weights become graph inputs under the same names.
 * RoPE uses the rotate_half convention with cos/sin tables (frozen initializers 'rope.cos' /
 * 'rope.sin', [maxPositionEmbeddings, headDim/2], rope_scaling applied) gathered by position;
 * qwen3 normalizes each q and k head (q_norm / k_norm) before RoPE. Attention runs as batched
 * matmuls over [B, KV, G, T, hd] (G = H / KV query heads per key/value head, so GQA never copies
 * K/V), with an additive causal mask: a constant [T, T] when T is static, else derived from
 * position_ids.
 */

import type { Dim, Graph, Value } from '../graph/graph';
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
  weightNames,
} from '../../model/config';
import { LazyWeights } from '../../model/lazy-weights';
import type { HostTensor } from '../../model/tensor';

export type FloatDType = 'float32' | 'float64';

export interface LoraSpec {
  /** Which projections get an adapter. */
  targets: readonly Projection[];
  /** r: a number for training; a symbol (e.g. 'lora_rank') lets one session take any rank, 0 included. */
  rank: Dim;
  /** alpha / r. Inference graphs use 1 and fold the scaling into B when the adapter is fed. */
  scaling: number;
}

export interface ForwardOptions {
  /** B; a number or a symbol. Default 'batch'. */
  batch?: Dim;
  /** T; a number (constant causal mask) or a symbol (mask from position_ids). Default 'seq'. */
  seqLen?: Dim;
  /** float64 graphs serve gradient checks; weights are converted at build time. Default float32. */
  dtype?: FloatDType;
  /** Which checkpoint weights become graph inputs (trainable) instead of frozen initializers. */
  trainableWeights?: 'none' | 'all' | ((hfName: string) => boolean);
  lora?: LoraSpec;
  /**
   * float32 only: RMSNorm, RoPE and SiLU as single ORT kernels (SimplifiedLayerNormalization,
   * com.microsoft RotaryEmbedding, QuickGelu) and 1/√hd folded into the QKᵀ product. Same math,
   * fewer passes over the activations; autodiff has rules for these kernels (training uses it).
   */
  fusedKernels?: boolean;
}

export interface LoraInput {
  /** [r, in] */
  a: Value;
  /** [out, r] */
  b: Value;
}

export interface ForwardGraph {
  /** Input 'input_ids', int64 [B, T]. */
  tokens: Value;
  /** Input 'position_ids', int64 [B, T]. */
  positions: Value;
  /**
   * [B, T, V]. Built on first read: ORT runs every node, so a caller that applies lm_head itself
   * (the training graph, in row chunks) never reads this and never pays for the full product.
   */
  readonly logits: Value;
  /** lm_head's weight [V, D] (embed_tokens when tied): initializer, or input when trainable. */
  lmHeadWeight: Value;
  /** [B, T, D], after the final norm. */
  hidden: Value;
  /** HF weight name → graph input, for trainable weights. */
  weightInputs: Map<string, Value>;
  /** PEFT module path (e.g. 'model.layers.0.self_attn.q_proj') → LoRA inputs. */
  loraInputs: Map<string, LoraInput>;
}

export const INPUT_IDS = 'input_ids';
export const POSITION_IDS = 'position_ids';
export const ROPE_COS = 'rope.cos';
export const ROPE_SIN = 'rope.sin';
/** Additive mask value for disallowed attention (finite, so backward never sees inf - inf). */
export const MASKED_SCORE = -1e9;

/** The graph input (and PEFT safetensors key) of a LoRA matrix. */
export function loraInputName(module: string, which: 'A' | 'B'): string {
  return `base_model.model.${module}.lora_${which}.weight`;
}

/** Checks every tensor a config needs is present with the right shape; one clear error otherwise. */
export function checkWeights(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  skip?: (name: string) => boolean,
): void {
  for (const spec of weightNames(cfg)) {
    if (skip?.(spec.name)) continue;
    const tensor = weights.get(spec.name);
    if (!tensor) throw new Error(`checkpoint is missing weight ${spec.name} [${spec.shape.join(', ')}]`);
    if (tensor.shape.length !== spec.shape.length || tensor.shape.some((d, i) => d !== spec.shape[i])) {
      throw new Error(
        `weight ${spec.name} has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`,
      );
    }
    if (tensor.dtype !== 'float32' && tensor.dtype !== 'float64') {
      throw new Error(`weight ${spec.name} has dtype ${tensor.dtype}, expected float32`);
    }
  }
}

/**
 * θ^(-2i/hd) for i < hd/2, stretched as cfg.ropeScaling says (HF's linear and llama3 rules), each
 * rounded to float32 as HF computes inv_freq in float32: that keeps long-position angles identical.
 */
export function ropeInverseFrequencies(cfg: ModelConfig): Float64Array {
  const half = cfg.headDim / 2;
  const result = new Float64Array(half);
  const scaling = cfg.ropeScaling;
  for (let i = 0; i < half; i++) {
    const invFreq = Math.fround(1 / Math.pow(cfg.ropeTheta, (2 * i) / cfg.headDim));
    if (!scaling) {
      result[i] = invFreq;
    } else if (scaling.type === 'linear') {
      result[i] = Math.fround(invFreq / scaling.factor);
    } else {
      // llama3: long wavelengths divided by factor, short ones kept, a smooth blend between.
      const oldContext = scaling.originalMaxPositionEmbeddings;
      const wavelength = (2 * Math.PI) / invFreq;
      let scaled: number;
      if (wavelength < oldContext / scaling.highFreqFactor) scaled = invFreq;
      else if (wavelength > oldContext / scaling.lowFreqFactor) scaled = invFreq / scaling.factor;
      else {
        const smooth =
          (oldContext / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
        scaled = (1 - smooth) * (invFreq / scaling.factor) + smooth * invFreq;
      }
      result[i] = Math.fround(scaled);
    }
  }
  return result;
}

/** cos/sin of position · inverse frequency (ropeInverseFrequencies), in float64: [positions, hd/2] each. */
export function ropeTables(
  cfg: ModelConfig,
  positions: number,
  dtype: FloatDType = 'float32',
): { cos: HostTensor; sin: HostTensor } {
  const half = cfg.headDim / 2;
  const Arr = dtype === 'float64' ? Float64Array : Float32Array;
  const cos = new Arr(positions * half);
  const sin = new Arr(positions * half);
  const inverseFrequencies = ropeInverseFrequencies(cfg);
  for (let i = 0; i < half; i++) {
    const invFreq = inverseFrequencies[i];
    for (let p = 0; p < positions; p++) {
      const angle = p * invFreq;
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos: { dtype, shape: [positions, half], data: cos }, sin: { dtype, shape: [positions, half], data: sin } };
}

export function convertTensor(tensor: HostTensor, dtype: FloatDType): HostTensor {
  if (tensor.dtype === dtype) return tensor;
  const data =
    dtype === 'float64'
      ? Float64Array.from(tensor.data as Float32Array)
      : Float32Array.from(tensor.data as Float64Array);
  return { dtype, shape: tensor.shape, data };
}

/** x · rsqrt(mean(x², -1) + eps) · w over the last axis. */
export function rmsNorm(x: Value, weight: Value, eps: number): Value {
  const meanSquare = op.reduceMean(op.mul(x, x), [-1]); // [..., 1]
  const inverseRms = op.reciprocal(op.sqrt(op.add(meanSquare, op.scalarLike(x, eps))));
  return op.mul(op.mul(x, inverseRms), weight);
}

/**
 * rotate_half RoPE on x [..., hd] with cos/sin broadcastable to [..., hd/2]:
 * [x1·cos − x2·sin, x2·cos + x1·sin] for the first/second halves x1, x2.
 */
export function applyRope(x: Value, cos: Value, sin: Value): Value {
  const half = Number(x.shape[x.rank - 1]) / 2;
  const [x1, x2] = op.split(x, -1, [half, half]);
  const first = op.sub(op.mul(x1, cos), op.mul(x2, sin));
  const second = op.add(op.mul(x2, cos), op.mul(x1, sin));
  return op.concat([first, second], -1);
}

/** Resolves each weight to an initializer (frozen) or a graph input (trainable). */
class WeightTable {
  readonly inputs = new Map<string, Value>();
  private readonly values = new Map<string, Value>();

  constructor(
    private readonly graph: Graph,
    private readonly cfg: ModelConfig,
    private readonly weights: ReadonlyMap<string, HostTensor>,
    private readonly dtype: FloatDType,
    private readonly trainable: (name: string) => boolean,
  ) {}

  get(name: string): Value {
    const existing = this.values.get(name);
    if (existing) return existing;
    const spec = weightNames(this.cfg).find((s) => s.name === name);
    if (!spec) throw new Error(`no weight ${name} in a ${this.cfg.modelType} model`);
    let value: Value;
    if (this.trainable(name)) {
      value = this.graph.input(name, this.dtype, spec.shape);
      this.inputs.set(name, value);
    } else {
      const tensor = this.weights.get(name);
      if (!tensor) throw new Error(`checkpoint is missing weight ${name}`);
      value = this.graph.initializer(name, convertTensor(tensor, this.dtype));
    }
    this.values.set(name, value);
    return value;
  }
}

function trainablePredicate(option: ForwardOptions['trainableWeights']): (name: string) => boolean {
  if (option === undefined || option === 'none') return () => false;
  if (option === 'all') return () => true;
  return option;
}

/** Creates the LoRA A/B inputs of every targeted projection. */
export function addLoraInputs(
  graph: Graph,
  cfg: ModelConfig,
  lora: LoraSpec,
  dtype: FloatDType,
): Map<string, LoraInput> {
  const inputs = new Map<string, LoraInput>();
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of lora.targets) {
      const module = projectionModule(layer, projection);
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      inputs.set(module, {
        a: graph.input(loraInputName(module, 'A'), dtype, [lora.rank, inFeatures]),
        b: graph.input(loraInputName(module, 'B'), dtype, [outFeatures, lora.rank]),
      });
    }
  }
  return inputs;
}

/** x [.., in] → x Wᵀ (+ b) (+ scaling · (x Aᵀ) Bᵀ). */
export function linear(x: Value, weight: Value, bias?: Value, lora?: LoraInput, scaling = 1): Value {
  let y = op.fusedMatmul(x, weight, { transB: true });
  if (bias) y = op.add(y, bias);
  if (lora) {
    const down = op.fusedMatmul(x, lora.a, { transB: true }); // [.., r]
    y = op.add(y, op.fusedMatmul(down, lora.b, { transB: true, alpha: scaling }));
  }
  return y;
}

/** Additive causal mask: constant [T, T] for a static T, else [B, 1, 1, T, T] from position_ids. */
function causalMask(graph: Graph, positions: Value, seqLen: Dim, dtype: FloatDType): Value {
  if (typeof seqLen === 'number') {
    const mask = dtype === 'float64' ? new Float64Array(seqLen * seqLen) : new Float32Array(seqLen * seqLen);
    for (let t = 0; t < seqLen; t++) for (let s = t + 1; s < seqLen; s++) mask[t * seqLen + s] = MASKED_SCORE;
    return graph.constant({ dtype, shape: [seqLen, seqLen], data: mask }, 'causal_mask');
  }
  const queryPositions = op.unsqueeze(positions, [1, 2, 4]); // [B, 1, 1, T, 1]
  const keyPositions = op.unsqueeze(positions, [1, 2, 3]); // [B, 1, 1, 1, T]
  const future = op.greater(keyPositions, queryPositions); // [B, 1, 1, T, T]
  return op.where(future, op.scalar(graph, MASKED_SCORE, dtype), op.scalar(graph, 0, dtype));
}

export function buildForward(
  graph: Graph,
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: ForwardOptions = {},
): ForwardGraph {
  const dtype = options.dtype ?? 'float32';
  const B = options.batch ?? 'batch';
  const T = options.seqLen ?? 'seq';
  const trainable = trainablePredicate(options.trainableWeights);
  // Lazy weights had their shapes checked when opened; checking again would read every tensor.
  if (!(weights instanceof LazyWeights)) checkWeights(cfg, weights, trainable);
  const H = cfg.numHeads;
  const KV = cfg.numKvHeads;
  const G = H / KV;
  const hd = cfg.headDim;
  const table = new WeightTable(graph, cfg, weights, dtype, trainable);

  const tokens = graph.input(INPUT_IDS, 'int64', [B, T]);
  const positions = graph.input(POSITION_IDS, 'int64', [B, T]);
  const loraInputs = options.lora ? addLoraInputs(graph, cfg, options.lora, dtype) : new Map<string, LoraInput>();
  const loraScaling = options.lora?.scaling ?? 1;

  const fused = options.fusedKernels === true;
  if (fused && dtype !== 'float32')
    throw new Error('fusedKernels needs float32 (ONNX Runtime has these CPU kernels in float32 only)');
  const rope = ropeTables(cfg, cfg.maxPositionEmbeddings, dtype);
  const cosTable = graph.initializer(ROPE_COS, rope.cos); // [maxPositions, hd/2]
  const sinTable = graph.initializer(ROPE_SIN, rope.sin);
  const cos = fused ? undefined : op.unsqueeze(op.gather(cosTable, positions), [2, 3]); // [B, T, 1, 1, hd/2]
  const sin = fused ? undefined : op.unsqueeze(op.gather(sinTable, positions), [2, 3]);
  const mask = causalMask(graph, positions, T, dtype);
  const queryScale = op.scalar(graph, 1 / Math.sqrt(hd), dtype);
  const norm = (x: Value, weight: Value) =>
    fused ? op.rmsNormalization(x, weight, cfg.rmsNormEps) : rmsNorm(x, weight, cfg.rmsNormEps);

  const project = (x: Value, layer: number, projection: Projection): Value => {
    const bias =
      cfg.attentionBias && (projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj')
        ? table.get(projectionBiasName(layer, projection))
        : undefined;
    const lora = loraInputs.get(projectionModule(layer, projection));
    return linear(x, table.get(projectionWeightName(layer, projection)), bias, lora, loraScaling);
  };

  let x = op.gather(table.get(EMBED_TOKENS_WEIGHT), tokens); // [B, T, D]
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    x = graph.scope(`layer${layer}`, () => {
      const normed = norm(x, table.get(layerNormWeightName(layer, 'input_layernorm')));
      let qHeads: Value;
      let kHeadsT: Value;
      // qwen3: RMSNorm over each head's hd values (x [B, T, heads·hd] or [.., hd]) before RoPE.
      const headNorm = (x: Value, which: 'q_norm' | 'k_norm', heads: number): Value => {
        if (!cfg.qkNorm) return x;
        const weight = table.get(headNormWeightName(layer, which));
        if (!fused) return rmsNorm(x, weight, cfg.rmsNormEps);
        const perHead = op.rmsNormalization(op.reshape(x, [0, 0, heads, hd]), weight, cfg.rmsNormEps);
        return op.reshape(perHead, [0, 0, heads * hd]);
      };
      if (fused) {
        const qIn = headNorm(project(normed, layer, 'q_proj'), 'q_norm', H);
        const kIn = headNorm(project(normed, layer, 'k_proj'), 'k_norm', KV);
        const q = op.rotaryEmbedding(qIn, positions, cosTable, sinTable, H); // [B, T, H·hd]
        const k = op.rotaryEmbedding(kIn, positions, cosTable, sinTable, KV); // [B, T, KV·hd]
        qHeads = op.transpose(op.reshape(q, [0, 0, KV, G, hd]), [0, 2, 3, 1, 4]); // [B, KV, G, T, hd]
        kHeadsT = op.transpose(op.reshape(k, [0, 0, KV, 1, hd]), [0, 2, 3, 4, 1]); // [B, KV, 1, hd, T]
      } else {
        const q = headNorm(op.reshape(project(normed, layer, 'q_proj'), [0, 0, KV, G, hd]), 'q_norm', H); // [B, T, KV, G, hd]
        const k = headNorm(op.reshape(project(normed, layer, 'k_proj'), [0, 0, KV, 1, hd]), 'k_norm', KV); // [B, T, KV, 1, hd]
        qHeads = op.transpose(op.mul(applyRope(q, cos!, sin!), queryScale), [0, 2, 3, 1, 4]); // [B, KV, G, T, hd]
        kHeadsT = op.transpose(applyRope(k, cos!, sin!), [0, 2, 3, 4, 1]); // [B, KV, 1, hd, T]
      }
      const v = op.reshape(project(normed, layer, 'v_proj'), [0, 0, KV, 1, hd]);
      const vHeads = op.transpose(v, [0, 2, 3, 1, 4]); // [B, KV, 1, T, hd]
      const product = fused
        ? op.fusedMatmul(qHeads, kHeadsT, { alpha: 1 / Math.sqrt(hd) })
        : op.matmul(qHeads, kHeadsT);
      const scores = op.add(product, mask); // [B, KV, G, T, T]
      const context = op.matmul(op.softmax(scores, -1), vHeads); // [B, KV, G, T, hd]
      const merged = op.reshape(op.transpose(context, [0, 3, 1, 2, 4]), [0, 0, H * hd]); // [B, T, H·hd]
      const attended = op.add(x, project(merged, layer, 'o_proj'));

      const normed2 = norm(attended, table.get(layerNormWeightName(layer, 'post_attention_layernorm')));
      const gate = project(normed2, layer, 'gate_proj'); // [B, T, F]
      const up = project(normed2, layer, 'up_proj');
      const activated = op.mul(fused ? op.silu(gate) : op.mul(gate, op.sigmoid(gate)), up); // silu(gate) · up
      return op.add(attended, project(activated, layer, 'down_proj'));
    });
  }
  const hidden = norm(x, table.get(FINAL_NORM_WEIGHT));
  const head = table.get(cfg.tieWordEmbeddings ? EMBED_TOKENS_WEIGHT : LM_HEAD_WEIGHT);
  let logits: Value | undefined;
  return {
    tokens,
    positions,
    get logits() {
      return (logits ??= op.fusedMatmul(hidden, head, { transB: true })); // [B, T, V]
    },
    lmHeadWeight: head,
    hidden,
    weightInputs: table.inputs,
    loraInputs,
  };
}
