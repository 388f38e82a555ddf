import { type DType, type HostTensor, elementCount } from '../../model/tensor';
import { type AttrValue, type Dim, type Graph, type Shape, Value, sameShape } from './graph';

// Typed op helpers: each appends one ONNX node and infers its output dtype and shape, so a
// malformed graph fails here, at build time, with the op and the shapes in the message.

type Shaped = { readonly shape: Shape };

function describe(v: Shaped): string {
  return v instanceof Value ? v.toString() : `[${v.shape.join(',')}]`;
}

function fail(op: string, message: string, ...values: Shaped[]): never {
  throw new Error(`${op}: ${message} (${values.map(describe).join(', ')})`);
}

function sameGraph(op: string, values: Value[]): Graph {
  const graph = values[0].graph;
  for (const v of values) if (v.graph !== graph) fail(op, 'inputs come from different graphs', ...values);
  return graph;
}

function sameDtype(op: string, values: Value[]): DType {
  const dtype = values[0].dtype;
  for (const v of values) if (v.dtype !== dtype) fail(op, 'dtypes differ', ...values);
  return dtype;
}

/** Numpy broadcasting; a symbolic dim matches itself or 1. */
export function broadcastShapes(op: string, ...values: Shaped[]): Dim[] {
  const rank = Math.max(...values.map((v) => v.shape.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let dim: Dim = 1;
    for (const v of values) {
      const d = v.shape[v.shape.length - rank + i] ?? 1;
      if (d === 1) continue;
      if (dim === 1) dim = d;
      else if (dim !== d) fail(op, `cannot broadcast dimension ${i}`, ...values);
    }
    out.push(dim);
  }
  return out;
}

function normalizeAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

// ---------------------------------------------------------------- constants

export function int64s(graph: Graph, values: readonly number[], name = 'ints'): Value {
  return graph.constant({ dtype: 'int64', shape: [values.length], data: BigInt64Array.from(values.map(BigInt)) }, name);
}

/** A scalar constant of `dtype` (a float dtype or int64/int32). */
export function scalar(graph: Graph, value: number, dtype: DType = 'float32', name = 'scalar'): Value {
  return graph.constant(tensorOf(dtype, [], [value]), name);
}

export function tensorOf(dtype: DType, shape: number[], values: ArrayLike<number>): HostTensor {
  const n = elementCount(shape);
  if (values.length !== n) throw new Error(`tensorOf: shape [${shape}] needs ${n} values, got ${values.length}`);
  switch (dtype) {
    case 'float32':
      return { dtype, shape, data: Float32Array.from(values) };
    case 'float64':
      return { dtype, shape, data: Float64Array.from(values) };
    case 'int32':
      return { dtype, shape, data: Int32Array.from(values) };
    case 'int64':
      return { dtype, shape, data: BigInt64Array.from(Array.from(values, (v) => BigInt(v))) };
    case 'bool':
    case 'uint8':
      return { dtype, shape, data: Uint8Array.from(values) };
    case 'int8':
      return { dtype, shape, data: Int8Array.from(values) };
    default:
      throw new Error(`tensorOf: unsupported dtype ${dtype}`);
  }
}

/** A scalar constant with the dtype of `like`. */
export function scalarLike(like: Value, value: number): Value {
  return scalar(like.graph, value, like.dtype);
}

// ---------------------------------------------------------------- elementwise

function binary(op: string, a: Value, b: Value, outDtype?: DType): Value {
  const graph = sameGraph(op, [a, b]);
  const dtype = sameDtype(op, [a, b]);
  return graph.node(op, [a, b], {}, [{ dtype: outDtype ?? dtype, shape: broadcastShapes(op, a, b) }])[0];
}

export const add = (a: Value, b: Value) => binary('Add', a, b);
export const sub = (a: Value, b: Value) => binary('Sub', a, b);
export const mul = (a: Value, b: Value) => binary('Mul', a, b);
export const div = (a: Value, b: Value) => binary('Div', a, b);
export const pow = (a: Value, b: Value) => binary('Pow', a, b);
export const max = (a: Value, b: Value) => binary('Max', a, b);
export const min = (a: Value, b: Value) => binary('Min', a, b);
export const greater = (a: Value, b: Value) => binary('Greater', a, b, 'bool');
export const greaterOrEqual = (a: Value, b: Value) => binary('GreaterOrEqual', a, b, 'bool');
export const lessOrEqual = (a: Value, b: Value) => binary('LessOrEqual', a, b, 'bool');

function unary(op: string, x: Value, attrs: Record<string, AttrValue> = {}, domain = ''): Value {
  return x.graph.node(op, [x], attrs, [{ dtype: x.dtype, shape: x.shape }], undefined, false, domain)[0];
}

export const neg = (x: Value) => unary('Neg', x);
export const exp = (x: Value) => unary('Exp', x);
export const log = (x: Value) => unary('Log', x);
export const sqrt = (x: Value) => unary('Sqrt', x);
export const reciprocal = (x: Value) => unary('Reciprocal', x);
export const sigmoid = (x: Value) => unary('Sigmoid', x);
export const tanh = (x: Value) => unary('Tanh', x);
export const sin = (x: Value) => unary('Sin', x);
export const identity = (x: Value) => unary('Identity', x);

export function cast(x: Value, to: DType): Value {
  return x.graph.node('Cast', [x], { to: onnxDataType(to) }, [{ dtype: to, shape: x.shape }])[0];
}

export function where(condition: Value, a: Value, b: Value): Value {
  const graph = sameGraph('Where', [condition, a, b]);
  if (condition.dtype !== 'bool') fail('Where', 'condition must be bool', condition);
  const dtype = sameDtype('Where', [a, b]);
  return graph.node('Where', [condition, a, b], {}, [{ dtype, shape: broadcastShapes('Where', condition, a, b) }])[0];
}

/** Sum of several same-typed values with broadcasting (ONNX Sum). */
export function sum(values: Value[]): Value {
  if (values.length === 0) throw new Error('Sum: no inputs');
  if (values.length === 1) return values[0];
  const graph = sameGraph('Sum', values);
  const dtype = sameDtype('Sum', values);
  return graph.node('Sum', values, {}, [{ dtype, shape: broadcastShapes('Sum', ...values) }])[0];
}

// ---------------------------------------------------------------- linear algebra

/** numpy.matmul semantics: batched over leading dims with broadcasting. */
export function matmul(a: Value, b: Value): Value {
  const graph = sameGraph('MatMul', [a, b]);
  const dtype = sameDtype('MatMul', [a, b]);
  return graph.node('MatMul', [a, b], {}, [{ dtype, shape: matmulShape('MatMul', a.shape, b.shape, a, b) }])[0];
}

function matmulShape(op: string, as: Shape, bs: Shape, a: Value, b: Value): Dim[] {
  if (as.length < 2 || bs.length < 2) fail(op, 'inputs must have rank >= 2', a, b);
  const k1 = as[as.length - 1];
  const k2 = bs[bs.length - 2];
  if (k1 !== k2) fail(op, `inner dimensions differ (${k1} vs ${k2})`, a, b);
  const batch = broadcastShapes(op, { shape: as.slice(0, -2) }, { shape: bs.slice(0, -2) });
  return [...batch, as[as.length - 2], bs[bs.length - 1]];
}

/**
 * com.microsoft FusedMatMul: alpha * op(A) @ op(B) with optional transposes of the last two
 * dimensions, which saves the Transpose nodes that backward passes would otherwise need.
 */
export function fusedMatmul(
  a: Value,
  b: Value,
  options: { transA?: boolean; transB?: boolean; alpha?: number } = {},
): Value {
  const graph = sameGraph('FusedMatMul', [a, b]);
  const dtype = sameDtype('FusedMatMul', [a, b]);
  const swap = (s: Shape, t?: boolean): Shape => (t ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);
  const shape = matmulShape('FusedMatMul', swap(a.shape, options.transA), swap(b.shape, options.transB), a, b);
  const attrs: Record<string, AttrValue> = {
    transA: options.transA ? 1 : 0,
    transB: options.transB ? 1 : 0,
    alpha: { float: options.alpha ?? 1 },
  };
  return graph.node('FusedMatMul', [a, b], attrs, [{ dtype, shape }], undefined, false, 'com.microsoft')[0];
}

// ---------------------------------------------------------------- shape manipulation

export function transpose(x: Value, perm: readonly number[]): Value {
  if (perm.length !== x.rank) fail('Transpose', `perm [${perm}] does not match rank`, x);
  const shape = perm.map((p) => x.shape[p]);
  return x.graph.node('Transpose', [x], { perm: [...perm] }, [{ dtype: x.dtype, shape }])[0];
}

/**
 * Reshape with ONNX semantics: 0 copies the input dimension, -1 is inferred. Symbolic input dims
 * may only be carried through with 0 (or absorbed by -1, which then becomes a new symbol).
 */
export function reshape(x: Value, target: readonly number[]): Value {
  const shape: Dim[] = target.map((d, i) => (d === 0 ? x.shape[i] : d));
  const inferred = shape.indexOf(-1);
  if (shape.filter((d) => d === -1).length > 1) fail('Reshape', `more than one -1 in [${target}]`, x);
  const inCount = x.shape.every((d) => typeof d === 'number') ? elementCount(x.shape as number[]) : undefined;
  if (inferred >= 0) {
    const known = shape.filter((d, i) => i !== inferred);
    if (inCount !== undefined && known.every((d) => typeof d === 'number')) {
      const rest = elementCount(known as number[]);
      if (rest === 0 || inCount % rest !== 0) fail('Reshape', `cannot infer -1 in [${target}]`, x);
      shape[inferred] = inCount / rest;
    } else {
      shape[inferred] = `${x.name}_reshaped_${inferred}`;
    }
  } else if (inCount !== undefined && shape.every((d) => typeof d === 'number')) {
    if (elementCount(shape as number[]) !== inCount) fail('Reshape', `element count differs for [${target}]`, x);
  }
  return x.graph.node('Reshape', [x, int64s(x.graph, target, 'shape')], {}, [{ dtype: x.dtype, shape }])[0];
}

export function unsqueeze(x: Value, axes: readonly number[]): Value {
  const rank = x.rank + axes.length;
  const normalized = axes.map((a) => normalizeAxis('Unsqueeze', a, rank)).sort((p, q) => p - q);
  const shape: Dim[] = [...x.shape];
  for (const a of normalized) shape.splice(a, 0, 1);
  return x.graph.node('Unsqueeze', [x, int64s(x.graph, normalized, 'axes')], {}, [{ dtype: x.dtype, shape }])[0];
}

export function squeeze(x: Value, axes: readonly number[]): Value {
  const normalized = axes.map((a) => normalizeAxis('Squeeze', a, x.rank));
  for (const a of normalized) if (x.shape[a] !== 1) fail('Squeeze', `dimension ${a} is not 1`, x);
  const shape = x.shape.filter((_, i) => !normalized.includes(i));
  return x.graph.node('Squeeze', [x, int64s(x.graph, normalized, 'axes')], {}, [{ dtype: x.dtype, shape }])[0];
}

export function concat(values: Value[], axis: number): Value {
  const graph = sameGraph('Concat', values);
  const dtype = sameDtype('Concat', values);
  const rank = values[0].rank;
  const a = normalizeAxis('Concat', axis, rank);
  let total: Dim = 0;
  for (const v of values) {
    if (v.rank !== rank) fail('Concat', 'ranks differ', ...values);
    v.shape.forEach((d, i) => {
      if (i !== a && d !== values[0].shape[i]) fail('Concat', `dimension ${i} differs`, ...values);
    });
    const d = v.shape[a];
    total = typeof total === 'number' && typeof d === 'number' ? total + d : `${total}+${d}`;
  }
  const shape = values[0].shape.map((d, i) => (i === a ? total : d));
  return graph.node('Concat', values, { axis: a }, [{ dtype, shape }])[0];
}

/** Static slice along the given axes (ONNX Slice with constant starts/ends, step 1). */
export function slice(x: Value, axes: readonly number[], starts: readonly number[], ends: readonly number[]): Value {
  const shape: Dim[] = [...x.shape];
  const normalized = axes.map((a) => normalizeAxis('Slice', a, x.rank));
  normalized.forEach((a, i) => {
    const dim = x.shape[a];
    if (typeof dim !== 'number') {
      shape[a] = `${x.name}_slice_${a}`;
      return;
    }
    const clamp = (v: number) => Math.max(0, Math.min(dim, v < 0 ? v + dim : v));
    shape[a] = Math.max(0, clamp(ends[i]) - clamp(starts[i]));
  });
  const g = x.graph;
  return g.node('Slice', [x, int64s(g, starts, 'starts'), int64s(g, ends, 'ends'), int64s(g, normalized, 'axes')], {}, [
    { dtype: x.dtype, shape },
  ])[0];
}

/** Splits `x` along `axis` into pieces of the given sizes. */
export function split(x: Value, axis: number, sizes: readonly number[]): Value[] {
  const a = normalizeAxis('Split', axis, x.rank);
  const dim = x.shape[a];
  const total = sizes.reduce((p, q) => p + q, 0);
  if (typeof dim === 'number' && dim !== total) fail('Split', `sizes [${sizes}] do not add up to ${dim}`, x);
  const types = sizes.map((s) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === a ? s : d)) }));
  return x.graph.node('Split', [x, int64s(x.graph, sizes, 'split')], { axis: a }, types);
}

/** Broadcasts `x` to `shape` (ONNX Expand). */
export function expand(x: Value, shape: readonly number[]): Value {
  const out = broadcastShapes('Expand', x, { shape });
  return x.graph.node('Expand', [x, int64s(x.graph, shape, 'shape')], {}, [{ dtype: x.dtype, shape: out }])[0];
}

/** The runtime shape of `x` as an int64 vector (ONNX Shape). */
export function shapeOf(x: Value): Value {
  return x.graph.node('Shape', [x], {}, [{ dtype: 'int64', shape: [x.rank] }], 'shape')[0];
}

/** A tensor of `like`'s shape and dtype filled with `value`; static shapes need no Shape node. */
export function fillLike(like: Value, value = 0, dtype: DType = like.dtype): Value {
  const g = like.graph;
  const shape = like.shape.every((d) => typeof d === 'number')
    ? int64s(g, like.shape as number[], 'shape')
    : shapeOf(like);
  return g.node(
    'ConstantOfShape',
    [shape],
    { value: tensorOf(dtype, [1], [value]) },
    [{ dtype, shape: like.shape }],
    'fill',
  )[0];
}

/** Expands `x` to the shape of `like` (static shape as a constant, else a Shape node). */
export function expandLike(x: Value, like: Value): Value {
  if (sameShape(x.shape, like.shape)) return x;
  const g = x.graph;
  const shape = like.shape.every((d) => typeof d === 'number')
    ? int64s(g, like.shape as number[], 'shape')
    : shapeOf(like);
  const out = broadcastShapes('Expand', x, like);
  return g.node('Expand', [x, shape], {}, [{ dtype: x.dtype, shape: out }])[0];
}

/** Reshapes `x` to the shape of `like` (same element count). */
export function reshapeLike(x: Value, like: Value): Value {
  if (sameShape(x.shape, like.shape)) return x;
  if (like.shape.every((d) => typeof d === 'number')) return reshape(x, like.shape as number[]);
  return x.graph.node('Reshape', [x, shapeOf(like)], {}, [{ dtype: x.dtype, shape: like.shape }])[0];
}

/** Constant zero padding (ONNX Pad): `pads` = [begin_0 … begin_n, end_0 … end_n]. */
export function pad(x: Value, pads: readonly number[]): Value {
  if (pads.length !== 2 * x.rank) fail('Pad', `needs ${2 * x.rank} pads, got ${pads.length}`, x);
  const shape = x.shape.map((d, i) =>
    typeof d === 'number'
      ? d + pads[i] + pads[i + x.rank]
      : pads[i] + pads[i + x.rank] === 0
        ? d
        : `${x.name}_pad_${i}`,
  );
  return x.graph.node('Pad', [x, int64s(x.graph, pads, 'pads')], { mode: 'constant' }, [{ dtype: x.dtype, shape }])[0];
}

// ---------------------------------------------------------------- reductions and softmax

function reduce(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
  const normalized = axes.map((a) => normalizeAxis(op, a, x.rank));
  const shape: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!normalized.includes(i)) shape.push(d);
    else if (keepdims) shape.push(1);
  });
  const g = x.graph;
  return g.node(op, [x, int64s(g, normalized, 'axes')], { keepdims: keepdims ? 1 : 0 }, [{ dtype: x.dtype, shape }])[0];
}

export const reduceSum = (x: Value, axes: readonly number[], keepdims = true) => reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Value, axes: readonly number[], keepdims = true) =>
  reduce('ReduceMean', x, axes, keepdims);
/** Σ x² over `axes` in one pass (no gradient rule: used for gradient norms, after autodiff). */
export const reduceSumSquare = (x: Value, axes: readonly number[], keepdims = true) =>
  reduce('ReduceSumSquare', x, axes, keepdims);

export function softmax(x: Value, axis = -1): Value {
  return unary('Softmax', x, { axis: normalizeAxis('Softmax', axis, x.rank) });
}

export function logSoftmax(x: Value, axis = -1): Value {
  return unary('LogSoftmax', x, { axis: normalizeAxis('LogSoftmax', axis, x.rank) });
}

/**
 * ONNX SoftmaxCrossEntropyLoss without reduction: scores [N, C], labels int64 [N] →
 * loss [N] (−log softmax at the label) and logProb [N, C]. One kernel instead of
 * LogSoftmax + GatherElements, and its gradient rule needs three passes over [N, C].
 */
export function softmaxCrossEntropy(scores: Value, labels: Value): { loss: Value; logProb: Value } {
  if (scores.rank !== 2) fail('SoftmaxCrossEntropyLoss', 'scores must be [N, C]', scores);
  if (labels.rank !== 1 || labels.dtype !== 'int64')
    fail('SoftmaxCrossEntropyLoss', 'labels must be int64 [N]', labels);
  const [loss, logProb] = scores.graph.node('SoftmaxCrossEntropyLoss', [scores, labels], { reduction: 'none' }, [
    { dtype: scores.dtype, shape: [scores.shape[0]] },
    { dtype: scores.dtype, shape: scores.shape },
  ]);
  return { loss, logProb };
}

// ---------------------------------------------------------------- fused kernels with our own gradient rules
// One kernel forward instead of several elementwise passes over big activations; their rules
// (gradients.ts) are also fewer passes than autodiff through the primitives. CPU kernels are
// float32 only, so float64 graphs (gradient checks) use the primitive compositions.

/** RMSNorm over the last axis: x · rsqrt(mean(x²) + eps) · gamma (SimplifiedLayerNormalization). */
export function rmsNormalization(x: Value, gamma: Value, eps: number): Value {
  const rowShape = [...x.shape.slice(0, -1), 1];
  return x.graph.node(
    'SimplifiedLayerNormalization',
    [x, gamma],
    { axis: -1, epsilon: { float: eps } },
    [
      { dtype: x.dtype, shape: x.shape },
      // inv_std_var [..., 1]: kept for the gradient rule.
      { dtype: x.dtype, shape: rowShape },
    ],
    'rms_norm',
  )[0];
}

/** SiLU x · σ(x) as com.microsoft QuickGelu with alpha 1. */
export function silu(x: Value): Value {
  return x.graph.node(
    'QuickGelu',
    [x],
    { alpha: { float: 1 } },
    [{ dtype: x.dtype, shape: x.shape }],
    'silu',
    false,
    'com.microsoft',
  )[0];
}

/**
 * Rotary position embedding (rotate_half convention) on x [B, T, heads·hd] with positions int64
 * [B, T] and cos/sin caches [maxPositions, hd/2] (com.microsoft RotaryEmbedding).
 */
export function rotaryEmbedding(x: Value, positions: Value, cos: Value, sin: Value, numHeads: number): Value {
  if (x.rank !== 3) fail('RotaryEmbedding', 'input must be [B, T, heads·hd]', x);
  return x.graph.node(
    'RotaryEmbedding',
    [x, positions, cos, sin],
    { num_heads: numHeads, interleaved: 0 },
    [{ dtype: x.dtype, shape: x.shape }],
    'rope',
    false,
    'com.microsoft',
  )[0];
}

// ---------------------------------------------------------------- indexing

/** ONNX Gather: out.shape = data.shape[:axis] + indices.shape + data.shape[axis+1:]. */
export function gather(data: Value, indices: Value, axis = 0): Value {
  const a = normalizeAxis('Gather', axis, data.rank);
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') fail('Gather', 'indices must be int32/int64', indices);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return data.graph.node('Gather', [data, indices], { axis: a }, [{ dtype: data.dtype, shape }])[0];
}

/** ONNX GatherElements: out has the shape of `indices`. */
export function gatherElements(data: Value, indices: Value, axis: number): Value {
  const a = normalizeAxis('GatherElements', axis, data.rank);
  if (indices.rank !== data.rank) fail('GatherElements', 'ranks differ', data, indices);
  return data.graph.node('GatherElements', [data, indices], { axis: a }, [
    { dtype: data.dtype, shape: indices.shape },
  ])[0];
}

/** ONNX ScatterElements; reduction 'add' accumulates duplicates. */
export function scatterElements(
  data: Value,
  indices: Value,
  updates: Value,
  axis: number,
  reduction: 'none' | 'add' = 'none',
): Value {
  const a = normalizeAxis('ScatterElements', axis, data.rank);
  if (!sameShape(indices.shape, updates.shape))
    fail('ScatterElements', 'indices and updates shapes differ', indices, updates);
  return data.graph.node('ScatterElements', [data, indices, updates], { axis: a, reduction }, [
    { dtype: data.dtype, shape: data.shape },
  ])[0];
}

/** ONNX ScatterND; `indices` [..., k] address the first k dims of data; reduction 'add' accumulates. */
export function scatterND(data: Value, indices: Value, updates: Value, reduction: 'none' | 'add' = 'none'): Value {
  if (indices.dtype !== 'int64') fail('ScatterND', 'indices must be int64', indices);
  return data.graph.node('ScatterND', [data, indices, updates], { reduction }, [
    { dtype: data.dtype, shape: data.shape },
  ])[0];
}

// ---------------------------------------------------------------- ONNX data types

const ONNX_DATA_TYPES: Record<DType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
};

export function onnxDataType(dtype: DType): number {
  return ONNX_DATA_TYPES[dtype];
}
