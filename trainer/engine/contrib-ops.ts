import { Dim, Value } from '../graph/graph';

// Fused ONNX Runtime contrib ops (com.microsoft) for the inference graphs. They have no gradient
// rules, so only inference.ts uses them; buildForward stays on plain ops. Each helper infers
// shapes the way the CPU kernel does (checked in test/unit/engine/inference.test.ts).

const MS = 'com.microsoft';

export interface GqaOptions {
  numHeads: number;
  kvNumHeads: number;
  headDim: number;
  /** Rotate q and k inside the op with cos/sin caches [maxPositions, headDim/2]. */
  rotary?: { cos: Value; sin: Value };
}

/**
 * GroupQueryAttention with packed QKV [B, S, (H + 2·KV)·hd] and a KV cache [B, KV, C, hd].
 * When the caller binds present_key/present_value to the same buffers as past_key/past_value,
 * the kernel writes only the new rows in place (its "share buffer" mode), so a decode step never
 * copies the cache. seqlensK: int32 [B] = total length − 1; totalLength: int32 scalar.
 * Returns [output [B, S, H·hd], presentKey, presentValue].
 */
export function groupQueryAttention(
  packedQkv: Value,
  pastKey: Value,
  pastValue: Value,
  seqlensK: Value,
  totalLength: Value,
  options: GqaOptions,
): [Value, Value, Value] {
  const { numHeads, kvNumHeads, headDim } = options;
  const [B, S] = packedQkv.shape;
  const inputs: (Value | null)[] = [packedQkv, null, null, pastKey, pastValue, seqlensK, totalLength];
  if (options.rotary) inputs.push(options.rotary.cos, options.rotary.sin);
  const attrs = { num_heads: numHeads, kv_num_heads: kvNumHeads, do_rotary: options.rotary ? 1 : 0, rotary_interleaved: 0 };
  const [output, presentKey, presentValue] = packedQkv.graph.node(
    'GroupQueryAttention',
    inputs,
    attrs,
    [
      { dtype: packedQkv.dtype, shape: [B, S, numHeads * headDim] },
      { dtype: pastKey.dtype, shape: pastKey.shape },
      { dtype: pastValue.dtype, shape: pastValue.shape },
    ],
    'attention',
    false,
    MS,
  );
  return [output, presentKey, presentValue];
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

/** x [.., K] · dequant(B int8 [K, N], per-column scale [N]) with x quantized per call to uint8. */
export function dynamicQuantizeMatMul(x: Value, weight: Value, scale: Value, bias?: Value): Value {
  const N = weight.shape[1];
  const inputs = [x, weight, scale, null, bias ?? null];
  return x.graph.node('DynamicQuantizeMatMul', bias ? inputs : inputs.slice(0, 3), {}, [
    { dtype: x.dtype, shape: [...x.shape.slice(0, -1), N] },
  ], 'dq_matmul', false, MS)[0];
}

/** x [.., K] · Wᵀ for W [N, K] stored as 4-bit blocks: packed uint8 [N, K/block, block/2], scales [N·K/block]. */
export function matMulNBits(
  x: Value,
  packed: Value,
  scales: Value,
  options: { K: number; N: number; blockSize: number; accuracyLevel: number },
  bias?: Value,
): Value {
  const inputs: (Value | null)[] = [x, packed, scales];
  if (bias) inputs.push(null, null, bias);
  return x.graph.node(
    'MatMulNBits',
    inputs,
    { K: options.K, N: options.N, bits: 4, block_size: options.blockSize, accuracy_level: options.accuracyLevel },
    [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), options.N] }],
    'nbits_matmul',
    false,
    MS,
  )[0];
}
