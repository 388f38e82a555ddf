import { type Graph, type Node, type Value, sameShape } from './graph';
import * as op from './ops';

// The table of gradient rules, keyed by op type ('com.microsoft.X' for contrib ops). A rule gets
// the node, the gradient of each output (null where the loss does not depend on it) and which
// inputs need a gradient, and returns one gradient per input (exactly the input's dtype and
// shape) for those that do. Each rule is checked against finite differences in float64 in
// test/unit/graph/gradients.test.ts.

export interface GradientContext {
  graph: Graph;
  node: Node;
  outputGrads: readonly (Value | null)[];
  needs: readonly boolean[];
  /**
   * Where the gradient of this node's output came from: the nodes that read `value` and
   * whether a seed was given for it. Rules use it to reuse a consumer's gradient (Softmax).
   */
  consumers?: (value: Value) => { nodes: readonly Node[]; seeded: boolean };
  /** The total gradient of a value whose consumers are all differentiated already. */
  gradientOf?: (value: Value) => Value | null;
}

export type GradientRule = (context: GradientContext) => readonly (Value | null | undefined)[];

// ---------------------------------------------------------------- helpers

/** The values of a constant int tensor input (axes, starts, split sizes …). */
export function constantInts(node: Node, index: number): number[] | undefined {
  const value = node.inputs[index];
  if (!value) return undefined;
  const tensor = value.graph.constants.get(value);
  if (!tensor)
    throw new Error(`${node.op} (${node.name}): input ${index} (${value.name}) must be a constant for its gradient`);
  return Array.from(tensor.data as ArrayLike<number | bigint>, Number);
}

function input(node: Node, index: number): Value {
  const value = node.inputs[index];
  if (!value) throw new Error(`${node.op} (${node.name}): input ${index} is missing`);
  return value;
}

function grad0(context: GradientContext): Value {
  const g = context.outputGrads[0];
  if (!g) throw new Error(`${context.node.op} (${context.node.name}): no output gradient`);
  return g;
}

const scalarLike = op.scalarLike;

/**
 * Sums `grad` over the axes that broadcasting expanded, so it gets `target`'s shape. A symbolic
 * dim must match the same symbol (a symbol cannot be known to be 1).
 */
export function unbroadcast(grad: Value, target: Value): Value {
  if (sameShape(grad.shape, target.shape)) return grad;
  const lead = grad.rank - target.rank;
  if (lead < 0) throw new Error(`unbroadcast: ${grad} has lower rank than ${target}`);
  const axes: number[] = [];
  for (let i = 0; i < grad.rank; i++) {
    if (i < lead) {
      axes.push(i);
      continue;
    }
    const t = target.shape[i - lead];
    const d = grad.shape[i];
    if (t === d) continue;
    if (t === 1) axes.push(i);
    else throw new Error(`unbroadcast: cannot reduce ${grad} to ${target}`);
  }
  let out = op.reduceSum(grad, axes, true);
  if (lead > 0)
    out = op.squeeze(
      out,
      Array.from({ length: lead }, (_, i) => i),
    );
  return out;
}

/** alpha · op(a) @ op(b) as one FusedMatMul (no Transpose node; ORT CPU runs it in float and double). */
function mm(a: Value, b: Value, transA: boolean, transB: boolean, alpha = 1): Value {
  if (!transA && !transB && alpha === 1) return op.matmul(a, b);
  return op.fusedMatmul(a, b, { transA, transB, alpha });
}

/** Collapses every leading dim into rows: [..., n] → [rows, n]. */
function rows(x: Value): Value {
  const last = x.shape[x.rank - 1];
  if (typeof last !== 'number') throw new Error(`matmul gradient: last dim of ${x} must be static`);
  return x.rank === 2 ? x : op.reshape(x, [-1, last]);
}

/**
 * Gradients of Y = alpha · op(A) @ op(B). When B is a plain [K, N] matrix shared across the
 * batch (a weight), dB is one [K, N] product over all rows instead of a batch of them reduced.
 */
function matmulGradients(context: GradientContext, transA: boolean, transB: boolean, alpha: number): (Value | null)[] {
  const { node, needs } = context;
  const a = input(node, 0);
  const b = input(node, 1);
  const g = grad0(context);
  let da: Value | null = null;
  let db: Value | null = null;
  if (needs[0]) {
    if (!transA) da = transB ? mm(g, b, false, false, alpha) : mm(g, b, false, true, alpha);
    else da = transB ? mm(b, g, true, true, alpha) : mm(b, g, false, true, alpha);
    da = unbroadcast(da, a);
  }
  if (needs[1]) {
    if (b.rank === 2 && a.rank > 2 && !transA) {
      // Shared weight: flatten the batch into rows, one [K, N] product.
      const a2 = rows(a);
      const g2 = rows(g);
      db = transB ? mm(g2, a2, true, false, alpha) : mm(a2, g2, true, false, alpha);
    } else {
      if (!transB) db = transA ? mm(a, g, false, false, alpha) : mm(a, g, true, false, alpha);
      else db = transA ? mm(g, a, true, true, alpha) : mm(g, a, true, false, alpha);
      db = unbroadcast(db, b);
    }
  }
  return [da, db];
}

/**
 * Σ_j g_ij·y_ij for attention probabilities y whose only use is C = y @ V (so g = dC·Vᵀ): it
 * equals Σ_d dC_id·C_id, a dot over V's columns instead of over y's whole row, which saves two
 * passes over the [.., T, T] tensor. Null when the pattern does not hold.
 */
function attentionRowDot(c: GradientContext, y: Value, axis: number): Value | null {
  if (!c.consumers || !c.gradientOf) return null;
  if (axis !== -1 && axis !== y.rank - 1) return null;
  const { nodes, seeded } = c.consumers(y);
  if (seeded || nodes.length !== 1) return null;
  const [matmul] = nodes;
  if (matmul.op !== 'MatMul' || matmul.domain !== '' || matmul.inputs[0] !== y || matmul.inputs[1] === y) return null;
  const context = matmul.outputs[0];
  const dContext = c.gradientOf(context);
  if (!dContext || !sameShape(context.shape.slice(0, -1), y.shape.slice(0, -1))) return null;
  return op.reduceSum(op.mul(dContext, context), [-1], true);
}

function reduceAxes(node: Node, x: Value): number[] {
  const axes = node.inputs.length > 1 ? constantInts(node, 1) : undefined;
  if (axes === undefined || axes.length === 0) {
    if (node.attrs.noop_with_empty_axes === 1) return [];
    return Array.from({ length: x.rank }, (_, i) => i);
  }
  return axes.map((a) => (a < 0 ? a + x.rank : a));
}

/** A reduction's output gradient brought back to the input's shape. */
function unreduce(node: Node, g: Value, x: Value): Value {
  const axes = reduceAxes(node, x);
  const keepdims = node.attrs.keepdims === undefined ? 1 : node.attrs.keepdims;
  const kept = keepdims === 1 || axes.length === 0 ? g : op.unsqueeze(g, axes);
  return op.expandLike(kept, x);
}

function zeroOf(like: Value): Value {
  return scalarLike(like, 0);
}

// ---------------------------------------------------------------- the rules

export const GRADIENT_RULES: Record<string, GradientRule> = {
  Identity: (c) => [grad0(c)],

  Add: (c) => {
    const g = grad0(c);
    return [c.needs[0] ? unbroadcast(g, input(c.node, 0)) : null, c.needs[1] ? unbroadcast(g, input(c.node, 1)) : null];
  },

  Sub: (c) => {
    const g = grad0(c);
    return [
      c.needs[0] ? unbroadcast(g, input(c.node, 0)) : null,
      c.needs[1] ? unbroadcast(op.neg(g), input(c.node, 1)) : null,
    ];
  },

  Sum: (c) => c.node.inputs.map((v, k) => (c.needs[k] && v ? unbroadcast(grad0(c), v) : null)),

  Mul: (c) => {
    const g = grad0(c);
    const a = input(c.node, 0);
    const b = input(c.node, 1);
    return [c.needs[0] ? unbroadcast(op.mul(g, b), a) : null, c.needs[1] ? unbroadcast(op.mul(g, a), b) : null];
  },

  Div: (c) => {
    const g = grad0(c);
    const a = input(c.node, 0);
    const b = input(c.node, 1);
    const y = c.node.outputs[0];
    // d(a/b)/db = -a/b² = -y/b
    return [
      c.needs[0] ? unbroadcast(op.div(g, b), a) : null,
      c.needs[1] ? unbroadcast(op.neg(op.div(op.mul(g, y), b)), b) : null,
    ];
  },

  Neg: (c) => [op.neg(grad0(c))],

  Pow: (c) => {
    const g = grad0(c);
    const x = input(c.node, 0);
    const p = input(c.node, 1);
    const y = c.node.outputs[0];
    let dx: Value | null = null;
    if (c.needs[0]) {
      const constant = c.graph.constants.get(p);
      if (constant && constant.shape.length === 0) {
        // x^p with a scalar constant p: p · x^(p-1), folded at build time.
        const pv = Number((constant.data as ArrayLike<number>)[0]);
        const derivative =
          pv === 2 ? op.mul(x, scalarLike(x, 2)) : op.mul(op.pow(x, scalarLike(x, pv - 1)), scalarLike(x, pv));
        dx = op.mul(g, derivative);
      } else {
        const pMinusOne = op.sub(p, scalarLike(p, 1));
        dx = op.mul(g, op.mul(p, op.pow(x, pMinusOne)));
      }
      dx = unbroadcast(dx, x);
    }
    // d(x^p)/dp = x^p · ln x
    const dp = c.needs[1] ? unbroadcast(op.mul(g, op.mul(y, op.log(x))), p) : null;
    return [dx, dp];
  },

  Exp: (c) => [op.mul(grad0(c), c.node.outputs[0])],

  Log: (c) => [op.div(grad0(c), input(c.node, 0))],

  Sqrt: (c) => {
    const y = c.node.outputs[0];
    return [op.div(op.mul(grad0(c), scalarLike(y, 0.5)), y)];
  },

  Reciprocal: (c) => {
    const y = c.node.outputs[0];
    return [op.neg(op.mul(grad0(c), op.mul(y, y)))];
  },

  Sigmoid: (c) => {
    const y = c.node.outputs[0];
    return [op.mul(grad0(c), op.mul(y, op.sub(scalarLike(y, 1), y)))];
  },

  Tanh: (c) => {
    const y = c.node.outputs[0];
    return [op.mul(grad0(c), op.sub(scalarLike(y, 1), op.mul(y, y)))];
  },

  Max: (c) => minMax(c, op.greaterOrEqual),
  Min: (c) => minMax(c, op.lessOrEqual),

  Cast: (c) => [op.cast(grad0(c), input(c.node, 0).dtype)],

  Where: (c) => {
    const g = grad0(c);
    const condition = input(c.node, 0);
    const a = input(c.node, 1);
    const b = input(c.node, 2);
    const zero = zeroOf(g);
    return [
      null,
      c.needs[1] ? unbroadcast(op.where(condition, g, zero), a) : null,
      c.needs[2] ? unbroadcast(op.where(condition, zero, g), b) : null,
    ];
  },

  MatMul: (c) => matmulGradients(c, false, false, 1),

  'com.microsoft.FusedMatMul': (c) => {
    const attrs = c.node.attrs;
    if (attrs.transBatchA || attrs.transBatchB)
      throw new Error(`FusedMatMul (${c.node.name}): no gradient with transBatchA/B`);
    const alpha = attrs.alpha === undefined ? 1 : (attrs.alpha as { float: number }).float;
    return matmulGradients(c, attrs.transA === 1, attrs.transB === 1, alpha);
  },

  Transpose: (c) => {
    const x = input(c.node, 0);
    const perm =
      (c.node.attrs.perm as number[] | undefined) ?? Array.from({ length: x.rank }, (_, i) => x.rank - 1 - i);
    const inverse = new Array<number>(perm.length);
    perm.forEach((p, i) => (inverse[p] = i));
    return [op.transpose(grad0(c), inverse)];
  },

  Reshape: (c) => [op.reshapeLike(grad0(c), input(c.node, 0))],
  Unsqueeze: (c) => [op.reshapeLike(grad0(c), input(c.node, 0))],
  Squeeze: (c) => [op.reshapeLike(grad0(c), input(c.node, 0))],
  Flatten: (c) => [op.reshapeLike(grad0(c), input(c.node, 0))],

  Expand: (c) => [unbroadcast(grad0(c), input(c.node, 0))],

  Concat: (c) => {
    const axis = c.node.attrs.axis as number;
    const sizes = c.node.inputs.map((v) => {
      const d = v?.shape[axis];
      if (typeof d !== 'number')
        throw new Error(`Concat (${c.node.name}): gradient needs static sizes along axis ${axis}`);
      return d;
    });
    const parts = op.split(grad0(c), axis, sizes);
    return parts.map((p, k) => (c.needs[k] ? p : null));
  },

  Split: (c) => {
    const axis = (c.node.attrs.axis as number | undefined) ?? 0;
    const parts = c.node.outputs.map((out, k) => c.outputGrads[k] ?? op.fillLike(out, 0));
    return [op.concat(parts, axis)];
  },

  Slice: (c) => {
    const x = input(c.node, 0);
    const starts = constantInts(c.node, 1)!;
    const ends = constantInts(c.node, 2)!;
    const axes = constantInts(c.node, 3) ?? starts.map((_, i) => i);
    const steps = constantInts(c.node, 4);
    if (steps?.some((s) => s !== 1)) throw new Error(`Slice (${c.node.name}): gradient supports step 1 only`);
    const pads = new Array<number>(2 * x.rank).fill(0);
    axes.forEach((axis, i) => {
      const a = axis < 0 ? axis + x.rank : axis;
      const dim = x.shape[a];
      if (typeof dim !== 'number') throw new Error(`Slice (${c.node.name}): gradient needs a static dim ${a}`);
      const clamp = (v: number) => Math.max(0, Math.min(dim, v < 0 ? v + dim : v));
      const begin = clamp(starts[i]);
      const end = Math.max(begin, clamp(ends[i]));
      pads[a] = begin;
      pads[a + x.rank] = dim - end;
    });
    return [op.pad(grad0(c), pads)];
  },

  ReduceSum: (c) => [unreduce(c.node, grad0(c), input(c.node, 0))],

  ReduceMean: (c) => {
    const x = input(c.node, 0);
    let count = 1;
    for (const a of reduceAxes(c.node, x)) {
      const d = x.shape[a];
      if (typeof d !== 'number') throw new Error(`ReduceMean (${c.node.name}): gradient needs static reduced dims`);
      count *= d;
    }
    return [unreduce(c.node, op.mul(grad0(c), scalarLike(x, 1 / count)), x)];
  },

  Softmax: (c) => {
    // dx = y · (g − Σ g·y)
    const y = c.node.outputs[0];
    const g = grad0(c);
    const axis = c.node.attrs.axis as number;
    const rowDot = attentionRowDot(c, y, axis) ?? op.reduceSum(op.mul(g, y), [axis], true);
    return [op.mul(y, op.sub(g, rowDot))];
  },

  LogSoftmax: (c) => {
    // dx = g − softmax(x) · Σ g
    const y = c.node.outputs[0];
    const g = grad0(c);
    const axis = c.node.attrs.axis as number;
    return [op.sub(g, op.mul(op.exp(y), op.reduceSum(g, [axis], true)))];
  },

  SimplifiedLayerNormalization: (c) => {
    // y = x·r·γ with r = rsqrt(mean(x²) + eps) (the kernel's second output, [..., 1]).
    // dx = r·(gγ − x·r²·mean(gγ·x)); dγ = Σ g·x·r over the leading axes.
    const x = input(c.node, 0);
    const gamma = input(c.node, 1);
    const r = c.node.outputs[1];
    if (!r) throw new Error(`SimplifiedLayerNormalization (${c.node.name}): gradient needs the inv_std_var output`);
    const axis = (c.node.attrs.axis as number | undefined) ?? -1;
    if (axis !== -1 && axis !== x.rank - 1)
      throw new Error(`SimplifiedLayerNormalization (${c.node.name}): gradient supports the last axis`);
    const g = grad0(c);
    let dx: Value | null = null;
    if (c.needs[0]) {
      const gg = op.mul(g, gamma);
      const meanGx = op.reduceMean(op.mul(gg, x), [-1], true); // [..., 1]
      const coefficient = op.mul(op.mul(r, r), meanGx); // [..., 1]
      dx = op.mul(op.sub(gg, op.mul(x, coefficient)), r);
    }
    const dGamma = c.needs[1] ? unbroadcast(op.mul(g, op.mul(x, r)), gamma) : null;
    return [dx, dGamma];
  },

  'com.microsoft.QuickGelu': (c) => {
    // y = x·σ(αx): dy/dx = s + α·(y − y·s) with s = σ(αx).
    const x = input(c.node, 0);
    const y = c.node.outputs[0];
    const alpha = c.node.attrs.alpha === undefined ? 1.702 : (c.node.attrs.alpha as { float: number }).float;
    const s = op.sigmoid(alpha === 1 ? x : op.mul(x, scalarLike(x, alpha)));
    let slope = op.sub(y, op.mul(y, s));
    if (alpha !== 1) slope = op.mul(slope, scalarLike(x, alpha));
    return [op.mul(grad0(c), op.add(s, slope))];
  },

  'com.microsoft.RotaryEmbedding': (c) => {
    // A rotation per (x1_i, x2_i) pair: its transpose is the rotation by −θ, i.e. the same kernel
    // with the sine cache negated.
    const [, positions, cos, sin] = c.node.inputs;
    if (!positions || !cos || !sin) throw new Error(`RotaryEmbedding (${c.node.name}): missing inputs`);
    if (c.needs[2] || c.needs[3])
      throw new Error(`RotaryEmbedding (${c.node.name}): no gradient for the cos/sin caches`);
    const g = grad0(c);
    const back = c.graph.node(
      'RotaryEmbedding',
      [g, positions, cos, op.neg(sin)],
      { ...c.node.attrs },
      [{ dtype: g.dtype, shape: g.shape }],
      'rope_grad',
      false,
      'com.microsoft',
    )[0];
    return [back, null, null, null];
  },

  SoftmaxCrossEntropyLoss: (c) => {
    // d loss_n / d scores_n = softmax(scores_n) − onehot(label_n): exp(logProb)·g, then −g scattered
    // onto the labels (ScatterElements with add; no one-hot tensor).
    const attrs = c.node.attrs;
    if ((attrs.reduction ?? 'mean') !== 'none' || c.node.inputs[2] || attrs.ignore_index !== undefined) {
      throw new Error(
        `SoftmaxCrossEntropyLoss (${c.node.name}): gradient supports reduction 'none' without weights or ignore_index`,
      );
    }
    const scores = input(c.node, 0);
    if (scores.rank !== 2) throw new Error(`SoftmaxCrossEntropyLoss (${c.node.name}): gradient supports [N, C] scores`);
    const labels = op.unsqueeze(input(c.node, 1), [1]); // [N, 1]
    const logProb = c.node.outputs[1];
    const [gLoss, gLogProb] = c.outputGrads;
    const probs = op.exp(logProb); // [N, C]
    let grad: Value | null = null;
    if (gLoss) {
      const g = op.unsqueeze(gLoss, [1]); // [N, 1]
      grad = op.scatterElements(op.mul(probs, g), labels, op.neg(g), 1, 'add');
    }
    if (gLogProb) {
      // As LogSoftmax: g − softmax · Σ g
      const viaLogProb = op.sub(gLogProb, op.mul(probs, op.reduceSum(gLogProb, [1], true)));
      grad = grad ? op.add(grad, viaLogProb) : viaLogProb;
    }
    return [grad, null];
  },

  Gather: (c) => {
    // Embedding lookup: scatter-add the rows' gradients into a zero table.
    const data = input(c.node, 0);
    const indices = input(c.node, 1);
    const axis = (c.node.attrs.axis as number | undefined) ?? 0;
    if (axis !== 0) throw new Error(`Gather (${c.node.name}): gradient supports axis 0 only, got ${axis}`);
    const index64 = indices.dtype === 'int64' ? indices : op.cast(indices, 'int64');
    return [op.scatterND(op.fillLike(data, 0), op.unsqueeze(index64, [-1]), grad0(c), 'add'), null];
  },

  GatherElements: (c) => {
    const data = input(c.node, 0);
    const axis = (c.node.attrs.axis as number | undefined) ?? 0;
    return [op.scatterElements(op.fillLike(data, 0), input(c.node, 1), grad0(c), axis, 'add'), null];
  },
};

function minMax(c: GradientContext, pick: (a: Value, b: Value) => Value): (Value | null)[] {
  if (c.node.inputs.length !== 2) throw new Error(`${c.node.op} (${c.node.name}): gradient supports two inputs`);
  const g = grad0(c);
  const a = input(c.node, 0);
  const b = input(c.node, 1);
  const aWins = pick(a, b); // ties go to the first input
  const zero = zeroOf(g);
  return [
    c.needs[0] ? unbroadcast(op.where(aWins, g, zero), a) : null,
    c.needs[1] ? unbroadcast(op.where(aWins, zero, g), b) : null,
  ];
}
