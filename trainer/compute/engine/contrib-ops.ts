import type { Dim, Value } from '../graph/graph';

// Fused ONNX Runtime contrib ops (com.microsoft) for the inference graphs. They have no gradient
// rules, so only inference.ts uses them; buildForward stays on plain ops. Each helper infers
// shapes the way the CPU kernel does (checked in test/unit/engine/inference.test.ts).

const MS = 'com.microsoft';

/**
 * FusedMatMul with batch transposes: transBatchA/B move an operand's first axis to just before
 * its last (A [T, ..., K] is read as [..., T, K]), so a position-major KV cache [S, KV, 1, hd]
 * is read as [KV, 1, S, hd] in place, without a Transpose copy. Never feed it a zero-size
 * operand: the CPU kernel divides by zero (SIGFPE, the process dies).
 */
export function fusedMatMulBatch(
  a: Value,
  b: Value,
  options: { transA?: boolean; transB?: boolean; transBatchA?: boolean; transBatchB?: boolean; alpha?: number },
  outputShape: Dim[],
  name = 'fused_matmul',
): Value {
  const attrs = {
    transA: options.transA ? 1 : 0,
    transB: options.transB ? 1 : 0,
    transBatchA: options.transBatchA ? 1 : 0,
    transBatchB: options.transBatchB ? 1 : 0,
    alpha: { float: options.alpha ?? 1 },
  };
  return a.graph.node('FusedMatMul', [a, b], attrs, [{ dtype: a.dtype, shape: outputShape }], name, false, MS)[0];
}

/** RMSNorm(x + skip) · gamma; also returns the sum x + skip (the next residual). */
export function skipRmsNorm(x: Value, skip: Value, gamma: Value, eps: number): { normed: Value; sum: Value } {
  const type = { dtype: x.dtype, shape: x.shape };
  const stat = { dtype: 'float32' as const, shape: [] as Dim[] };
  const [normed, , , sum] = x.graph.node(
    'SkipSimplifiedLayerNormalization',
    [x, skip, gamma],
    { epsilon: { float: eps } },
    [type, stat, stat, type],
    'skip_norm',
    false,
    MS,
  );
  return { normed, sum };
}

/** RMSNorm(x) · gamma over the last axis (ONNX-domain SimplifiedLayerNormalization, a contrib kernel). */
export function rmsNormFused(x: Value, gamma: Value, eps: number): Value {
  return x.graph.node('SimplifiedLayerNormalization', [x, gamma], { axis: -1, epsilon: { float: eps } }, [
    { dtype: x.dtype, shape: x.shape },
  ])[0];
}

/**
 * x [.., K] · Wᵀ for W [N, K] stored as `bits`-bit blocks: packed uint8 [N, K/block, block·bits/8],
 * scales [N·K/block]. accuracy_level 4 quantizes x per block to int8 and multiplies in int8
 * (MLAS's VNNI / AVX2 kernels, the fast path at both 4 and 8 bits).
 */
export function matMulNBits(
  x: Value,
  packed: Value,
  scales: Value,
  options: { K: number; N: number; bits: 4 | 8; blockSize: number },
  bias?: Value,
): Value {
  const inputs: (Value | null)[] = [x, packed, scales];
  if (bias) inputs.push(null, null, bias);
  return x.graph.node(
    'MatMulNBits',
    inputs,
    { K: options.K, N: options.N, bits: options.bits, block_size: options.blockSize, accuracy_level: 4 },
    [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), options.N] }],
    'nbits_matmul',
    false,
    MS,
  )[0];
}
