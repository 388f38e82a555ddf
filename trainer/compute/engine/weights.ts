import type { Graph, Value } from '../graph/graph';
import { INT4_BLOCK, INT8_BLOCK } from '../../model/precision';
import type { HostTensor } from '../../model/tensor';
import { matMulNBits } from './contrib-ops';
import * as op from '../graph/ops';

// Inference-time weight preparation: packing projections that share an input (q|k|v, gate|up),
// folding a LoRA adapter into the base (W' = W + scaling·B·A), and quantizing for decode.

/**
 * fp32, or weights in blocks along K with a float32 scale each (int8: 128-blocks, int4: 32-blocks),
 * multiplied by MatMulNBits with int8 compute (accuracy_level 4: x quantized per block).
 */
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

/**
 * Blockwise symmetric quantization of W [N, K] for MatMulNBits: unsigned q with the default zero
 * point 2^(bits−1), value = (q − zero)·scale per block of K (the last block is zero-padded);
 * 4-bit values go two per byte, low nibble first.
 */
function quantizeBlocks(weight: HostTensor, bits: 4 | 8, block: number): { packed: HostTensor; scales: HostTensor } {
  const [N, K] = weight.shape;
  const blocks = Math.ceil(K / block);
  const zero = 1 << (bits - 1);
  const top = (1 << bits) - 1;
  const bytesPerBlock = (block * bits) / 8;
  const W = weight.data as Float32Array;
  const packed = new Uint8Array(N * blocks * bytesPerBlock);
  const scales = new Float32Array(N * blocks);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const start = n * K + b * block;
      const width = Math.min(block, K - b * block);
      let maxAbs = 0;
      for (let i = 0; i < width; i++) maxAbs = Math.max(maxAbs, Math.abs(W[start + i]));
      const s = maxAbs > 0 ? maxAbs / (zero - 1) : 1;
      scales[n * blocks + b] = s;
      const out = (n * blocks + b) * bytesPerBlock;
      for (let i = 0; i < block; i++) {
        const q = i < width ? Math.max(0, Math.min(top, Math.round(W[start + i] / s) + zero)) : zero;
        if (bits === 8) packed[out + i] = q;
        else packed[out + (i >> 1)] |= q << (4 * (i & 1));
      }
    }
  }
  return {
    packed: { dtype: 'uint8', shape: [N, blocks, bytesPerBlock], data: packed },
    scales: { dtype: 'float32', shape: [N * blocks], data: scales },
  };
}

/** 8-bit blocks of INT8_BLOCK for MatMulNBits (q in [1, 255], zero point 128). */
export function quantizeInt8(weight: HostTensor): { packed: HostTensor; scales: HostTensor } {
  return quantizeBlocks(weight, 8, INT8_BLOCK);
}

/** 4-bit blocks of INT4_BLOCK for MatMulNBits (q in [0, 15], zero point 8). */
export function quantizeInt4(weight: HostTensor): { packed: HostTensor; scales: HostTensor } {
  return quantizeBlocks(weight, 4, INT4_BLOCK);
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
  if (precision !== 'float32') {
    const int8 = precision === 'int8';
    const q = int8 ? quantizeInt8(weight) : quantizeInt4(weight);
    return matMulNBits(
      x,
      graph.initializer(`${name}.${precision}`, q.packed),
      graph.initializer(`${name}.scales`, q.scales),
      { K, N, bits: int8 ? 8 : 4, blockSize: int8 ? INT8_BLOCK : INT4_BLOCK },
      biasValue,
    );
  }
  const y = op.fusedMatmul(x, graph.initializer(`${name}.weight`, weight), { transB: true });
  return biasValue ? op.add(y, biasValue) : y;
}
