import type { Graph, Value } from '../graph/graph';
import type { HostTensor } from '../../model/tensor';
import { dynamicQuantizeMatMul, matMulNBits } from './contrib-ops';
import * as op from '../graph/ops';

// Inference-time weight preparation: packing projections that share an input (q|k|v, gate|up),
// folding a LoRA adapter into the base (W' = W + scaling·B·A), and quantizing for decode.

/** fp32; int8 = per-output-channel symmetric, DynamicQuantizeMatMul; int4 = 32-blocks, MatMulNBits accuracy_level 4. */
export type Precision = 'float32' | 'int8' | 'int4';

export interface LoraModuleWeights {
  /** [r, in] */
  a: HostTensor;
  /** [out, r] */
  b: HostTensor;
}

/** A LoRA adapter in memory: PEFT module path (e.g. 'model.layers.0.self_attn.q_proj') → A/B, and alpha / r. */
export interface LoraAdapter {
  scaling: number;
  modules: ReadonlyMap<string, LoraModuleWeights>;
}

/** Row-concatenates [out_i, in] matrices (or [out_i] vectors) into one. */
export function concatRows(tensors: HostTensor[]): HostTensor {
  const cols = tensors[0].shape.length === 2 ? tensors[0].shape[1] : 1;
  let rows = 0;
  for (const t of tensors) rows += t.shape[0];
  const data = new Float32Array(rows * cols);
  let at = 0;
  for (const t of tensors) {
    data.set(t.data as Float32Array, at);
    at += t.data.length;
  }
  return { dtype: 'float32', shape: tensors[0].shape.length === 2 ? [rows, cols] : [rows], data };
}

/** W + scaling · B·A for W [out, in], A [r, in], B [out, r]; returns a new tensor. */
export function mergeLora(weight: HostTensor, lora: LoraModuleWeights, scaling: number): HostTensor {
  const [outFeatures, inFeatures] = weight.shape;
  const r = lora.a.shape[0];
  if (lora.a.shape[1] !== inFeatures || lora.b.shape[0] !== outFeatures || lora.b.shape[1] !== r) {
    throw new Error(
      `LoRA shapes A [${lora.a.shape}] / B [${lora.b.shape}] do not fit a weight of shape [${weight.shape}]`,
    );
  }
  const W = weight.data as Float32Array;
  const A = lora.a.data as Float32Array;
  const B = lora.b.data as Float32Array;
  const merged = new Float32Array(W.length);
  const row = new Float64Array(inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const coefficient = scaling * B[o * r + k];
      if (coefficient === 0) continue;
      const aRow = k * inFeatures;
      for (let i = 0; i < inFeatures; i++) row[i] += coefficient * A[aRow + i];
    }
    const base = o * inFeatures;
    for (let i = 0; i < inFeatures; i++) merged[base + i] = W[base + i] + row[i];
  }
  return { dtype: 'float32', shape: [outFeatures, inFeatures], data: merged };
}

/** int8 per-output-channel symmetric quantization of W [out, in] into DynamicQuantizeMatMul's B [in, out]. */
export function quantizeInt8(weight: HostTensor): { weight: HostTensor; scale: HostTensor } {
  const [outFeatures, inFeatures] = weight.shape;
  const W = weight.data as Float32Array;
  const q = new Int8Array(W.length);
  const scale = new Float32Array(outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    let maxAbs = 0;
    for (let i = 0; i < inFeatures; i++) maxAbs = Math.max(maxAbs, Math.abs(W[o * inFeatures + i]));
    const s = maxAbs > 0 ? maxAbs / 127 : 1;
    scale[o] = s;
    for (let i = 0; i < inFeatures; i++) q[i * outFeatures + o] = Math.round(W[o * inFeatures + i] / s);
  }
  return {
    weight: { dtype: 'int8', shape: [inFeatures, outFeatures], data: q },
    scale: { dtype: 'float32', shape: [outFeatures], data: scale },
  };
}

export const INT4_BLOCK = 32;

/**
 * 4-bit blockwise quantization of W [N, K] for MatMulNBits: unsigned q in [0, 15] with the
 * default zero point 8, value = (q − 8)·scale, two values per byte (low nibble first).
 */
export function quantizeInt4(weight: HostTensor): { packed: HostTensor; scales: HostTensor } {
  const [N, K] = weight.shape;
  const blocks = Math.ceil(K / INT4_BLOCK); // the last block is zero-padded
  const W = weight.data as Float32Array;
  const packed = new Uint8Array(N * blocks * (INT4_BLOCK / 2));
  const scales = new Float32Array(N * blocks);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const start = n * K + b * INT4_BLOCK;
      const width = Math.min(INT4_BLOCK, K - b * INT4_BLOCK);
      const at = (i: number) => (i < width ? W[start + i] : 0);
      let maxAbs = 0;
      for (let i = 0; i < width; i++) maxAbs = Math.max(maxAbs, Math.abs(W[start + i]));
      const s = maxAbs > 0 ? maxAbs / 7 : 1;
      scales[n * blocks + b] = s;
      const out = (n * blocks + b) * (INT4_BLOCK / 2);
      for (let i = 0; i < INT4_BLOCK; i += 2) {
        const lo = Math.max(0, Math.min(15, Math.round(at(i) / s) + 8));
        const hi = Math.max(0, Math.min(15, Math.round(at(i + 1) / s) + 8));
        packed[out + i / 2] = lo | (hi << 4);
      }
    }
  }
  return {
    packed: { dtype: 'uint8', shape: [N, blocks, INT4_BLOCK / 2], data: packed },
    scales: { dtype: 'float32', shape: [N * blocks], data: scales },
  };
}

/** x [.., in] · Wᵀ (+ bias) with W [out, in] stored at `precision`, as frozen initializers named `name.*`. */
export function frozenLinear(
  graph: Graph,
  x: Value,
  name: string,
  weight: HostTensor,
  precision: Precision,
  bias?: HostTensor,
): Value {
  const biasValue = bias ? graph.initializer(`${name}.bias`, bias, false) : undefined;
  const [N, K] = weight.shape;
  if (precision === 'int8') {
    const q = quantizeInt8(weight);
    return dynamicQuantizeMatMul(
      x,
      graph.initializer(`${name}.int8`, q.weight),
      graph.initializer(`${name}.scale`, q.scale),
      biasValue,
    );
  }
  if (precision === 'int4') {
    const q = quantizeInt4(weight);
    const options = { K, N, blockSize: INT4_BLOCK, accuracyLevel: 4 };
    return matMulNBits(
      x,
      graph.initializer(`${name}.int4`, q.packed),
      graph.initializer(`${name}.scales`, q.scales),
      options,
      biasValue,
    );
  }
  const y = op.fusedMatmul(x, graph.initializer(`${name}.weight`, weight), { transB: true });
  return biasValue ? op.add(y, biasValue) : y;
}
