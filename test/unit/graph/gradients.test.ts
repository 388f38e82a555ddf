import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { gradients } from '../../../trainer/compute/graph/autodiff';
import { Graph, type Value, sameShape } from '../../../trainer/compute/graph/graph';
import { GRADIENT_RULES } from '../../../trainer/compute/graph/gradients';
import { serializeModel } from '../../../trainer/compute/graph/onnx';
import * as op from '../../../trainer/compute/graph/ops';
import { type InputSpec, checkGradients } from './finite-differences';

const positive: [number, number] = [0.5, 2];

function int64Constant(g: Graph, shape: number[], values: number[]): Value {
  return g.constant(op.tensorOf('int64', shape, values), 'indices');
}

interface Case {
  name: string;
  rule: string; // the rule the case is about (every rule must have at least one case)
  inputs: InputSpec[];
  build: (g: Graph, x: Value[]) => Value;
}

const cases: Case[] = [
  { name: 'Identity', rule: 'Identity', inputs: [{ shape: [2, 3] }], build: (g, [a]) => op.identity(a) },
  {
    name: 'Add with broadcasting both ways',
    rule: 'Add',
    inputs: [{ shape: [2, 3, 4] }, { shape: [3, 1] }],
    build: (g, [a, b]) => op.add(a, b),
  },
  {
    name: 'Sub with a lower-rank left side',
    rule: 'Sub',
    inputs: [{ shape: [4] }, { shape: [2, 3, 4] }],
    build: (g, [a, b]) => op.sub(a, b),
  },
  {
    name: 'Mul with broadcasting',
    rule: 'Mul',
    inputs: [{ shape: [2, 1, 4] }, { shape: [3, 4] }],
    build: (g, [a, b]) => op.mul(a, b),
  },
  {
    name: 'Div',
    rule: 'Div',
    inputs: [{ shape: [2, 3] }, { shape: [3], range: positive }],
    build: (g, [a, b]) => op.div(a, b),
  },
  {
    name: 'Sum of three with broadcasting',
    rule: 'Sum',
    inputs: [{ shape: [2, 3] }, { shape: [3] }, { shape: [2, 1] }],
    build: (g, x) => op.sum(x),
  },
  { name: 'Neg', rule: 'Neg', inputs: [{ shape: [5] }], build: (g, [a]) => op.neg(a) },
  {
    name: 'Pow, constant exponent 3',
    rule: 'Pow',
    inputs: [{ shape: [2, 3], range: positive }],
    build: (g, [a]) => op.pow(a, op.scalar(g, 3, 'float64')),
  },
  {
    name: 'Pow, constant exponent 2',
    rule: 'Pow',
    inputs: [{ shape: [2, 3] }],
    build: (g, [a]) => op.pow(a, op.scalar(g, 2, 'float64')),
  },
  {
    name: 'Pow, tensor exponent (both differentiated)',
    rule: 'Pow',
    inputs: [{ shape: [2, 3], range: positive }, { shape: [3] }],
    build: (g, [a, p]) => op.pow(a, p),
  },
  { name: 'Exp', rule: 'Exp', inputs: [{ shape: [2, 3] }], build: (g, [a]) => op.exp(a) },
  { name: 'Log', rule: 'Log', inputs: [{ shape: [2, 3], range: positive }], build: (g, [a]) => op.log(a) },
  { name: 'Sqrt', rule: 'Sqrt', inputs: [{ shape: [2, 3], range: positive }], build: (g, [a]) => op.sqrt(a) },
  {
    name: 'Reciprocal',
    rule: 'Reciprocal',
    inputs: [{ shape: [2, 3], range: positive }],
    build: (g, [a]) => op.reciprocal(a),
  },
  { name: 'Sigmoid', rule: 'Sigmoid', inputs: [{ shape: [2, 3], range: [-3, 3] }], build: (g, [a]) => op.sigmoid(a) },
  { name: 'Tanh', rule: 'Tanh', inputs: [{ shape: [2, 3], range: [-2, 2] }], build: (g, [a]) => op.tanh(a) },
  {
    name: 'Max with broadcasting',
    rule: 'Max',
    inputs: [{ shape: [2, 3] }, { shape: [3] }],
    build: (g, [a, b]) => op.max(a, b),
  },
  { name: 'Min', rule: 'Min', inputs: [{ shape: [2, 3] }, { shape: [2, 3] }], build: (g, [a, b]) => op.min(a, b) },
  {
    name: 'Cast (float64 → float64; a float32 round trip would swamp finite differences)',
    rule: 'Cast',
    inputs: [{ shape: [2, 3] }],
    build: (g, [a]) => op.mul(op.cast(a, 'float64'), a),
  },
  {
    name: 'Where with a broadcast branch',
    rule: 'Where',
    inputs: [{ shape: [2, 3] }, { shape: [3] }],
    build: (g, [a, b]) => op.where(g.constant(op.tensorOf('bool', [2, 3], [1, 0, 1, 0, 0, 1]), 'cond'), a, b),
  },
  {
    name: 'MatMul 2-D',
    rule: 'MatMul',
    inputs: [{ shape: [3, 4] }, { shape: [4, 5] }],
    build: (g, [a, b]) => op.matmul(a, b),
  },
  {
    name: 'MatMul batch × shared weight',
    rule: 'MatMul',
    inputs: [{ shape: [2, 3, 4] }, { shape: [4, 5] }],
    build: (g, [a, b]) => op.matmul(a, b),
  },
  {
    name: 'MatMul matrix × batch',
    rule: 'MatMul',
    inputs: [{ shape: [3, 4] }, { shape: [2, 4, 5] }],
    build: (g, [a, b]) => op.matmul(a, b),
  },
  {
    name: 'MatMul with broadcast batch dims',
    rule: 'MatMul',
    inputs: [{ shape: [2, 1, 3, 4] }, { shape: [3, 4, 2] }],
    build: (g, [a, b]) => op.matmul(a, b),
  },
  ...[false, true].flatMap((transA) =>
    [false, true].flatMap((transB) => [
      {
        name: `FusedMatMul transA=${transA} transB=${transB} alpha 0.5, batched`,
        rule: 'com.microsoft.FusedMatMul',
        inputs: [{ shape: transA ? [2, 4, 3] : [2, 3, 4] }, { shape: transB ? [2, 5, 4] : [2, 4, 5] }],
        build: (g: Graph, [a, b]: Value[]) => op.fusedMatmul(a, b, { transA, transB, alpha: 0.5 }),
      },
      {
        name: `FusedMatMul transA=${transA} transB=${transB}, shared weight`,
        rule: 'com.microsoft.FusedMatMul',
        inputs: [{ shape: transA ? [2, 4, 3] : [2, 3, 4] }, { shape: transB ? [5, 4] : [4, 5] }],
        build: (g: Graph, [a, b]: Value[]) => op.fusedMatmul(a, b, { transA, transB }),
      },
    ]),
  ),
  {
    name: 'Transpose',
    rule: 'Transpose',
    inputs: [{ shape: [2, 3, 4] }],
    build: (g, [a]) => op.transpose(a, [1, 2, 0]),
  },
  { name: 'Reshape', rule: 'Reshape', inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => op.reshape(a, [4, -1]) },
  { name: 'Unsqueeze', rule: 'Unsqueeze', inputs: [{ shape: [2, 3] }], build: (g, [a]) => op.unsqueeze(a, [0, 2]) },
  { name: 'Squeeze', rule: 'Squeeze', inputs: [{ shape: [2, 1, 3] }], build: (g, [a]) => op.squeeze(a, [1]) },
  {
    name: 'Flatten',
    rule: 'Flatten',
    inputs: [{ shape: [2, 3, 2] }],
    build: (g, [a]) => g.node('Flatten', [a], { axis: 1 }, [{ dtype: a.dtype, shape: [2, 6] }])[0],
  },
  { name: 'Expand', rule: 'Expand', inputs: [{ shape: [3, 1] }], build: (g, [a]) => op.expand(a, [2, 3, 4]) },
  {
    name: 'Concat of three',
    rule: 'Concat',
    inputs: [{ shape: [2, 1, 3] }, { shape: [2, 2, 3] }, { shape: [2, 3, 3] }],
    build: (g, x) => op.concat(x, 1),
  },
  {
    name: 'Slice on two axes, negative start',
    rule: 'Slice',
    inputs: [{ shape: [3, 5, 4] }],
    build: (g, [a]) => op.slice(a, [1, 2], [1, -3], [4, 100]),
  },
  {
    name: 'Split, one piece unused',
    rule: 'Split',
    inputs: [{ shape: [2, 6] }],
    build: (g, [a]) => {
      const [p, , r] = op.split(a, 1, [1, 2, 3]);
      return op.concat([r, p], 1);
    },
  },
  {
    name: 'ReduceSum keepdims',
    rule: 'ReduceSum',
    inputs: [{ shape: [2, 3, 4] }],
    build: (g, [a]) => op.reduceSum(a, [0, 2], true),
  },
  {
    name: 'ReduceSum no keepdims',
    rule: 'ReduceSum',
    inputs: [{ shape: [2, 3, 4] }],
    build: (g, [a]) => op.reduceSum(a, [-1], false),
  },
  {
    name: 'ReduceMean',
    rule: 'ReduceMean',
    inputs: [{ shape: [2, 3, 4] }],
    build: (g, [a]) => op.reduceMean(a, [1], false),
  },
  { name: 'Softmax last axis', rule: 'Softmax', inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => op.softmax(a, -1) },
  { name: 'Softmax middle axis', rule: 'Softmax', inputs: [{ shape: [2, 3, 4] }], build: (g, [a]) => op.softmax(a, 1) },
  {
    // The attention pattern: the row dot comes from the MatMul's output and its gradient.
    name: 'Softmax into MatMul (attention, values broadcast over a batch dim)',
    rule: 'Softmax',
    inputs: [{ shape: [2, 3, 4, 4] }, { shape: [2, 1, 4, 5] }],
    build: (g, [s, v]) => op.matmul(op.softmax(s, -1), v),
  },
  {
    name: 'Softmax into two MatMuls (the plain rule)',
    rule: 'Softmax',
    inputs: [{ shape: [3, 4, 4] }, { shape: [3, 4, 2] }, { shape: [4, 2] }],
    build: (g, [s, v, w]) => {
      const p = op.softmax(s, -1);
      return op.add(op.matmul(p, v), op.matmul(p, w));
    },
  },
  { name: 'LogSoftmax', rule: 'LogSoftmax', inputs: [{ shape: [2, 5] }], build: (g, [a]) => op.logSoftmax(a, -1) },
  {
    name: 'Gather (embedding, repeated ids)',
    rule: 'Gather',
    inputs: [{ shape: [5, 3] }],
    build: (g, [table]) => op.gather(table, int64Constant(g, [2, 3], [4, 0, 4, 1, 4, 0])),
  },
  {
    name: 'Gather with int32 ids',
    rule: 'Gather',
    inputs: [{ shape: [4, 2] }],
    build: (g, [table]) => op.gather(table, g.constant(op.tensorOf('int32', [3], [3, 3, 1]), 'ids')),
  },
  {
    name: 'SoftmaxCrossEntropyLoss (loss output)',
    rule: 'SoftmaxCrossEntropyLoss',
    inputs: [{ shape: [4, 5], range: [-2, 2] }],
    build: (g, [a]) => op.softmaxCrossEntropy(a, int64Constant(g, [4], [0, 4, 4, 2])).loss,
  },
  {
    name: 'SoftmaxCrossEntropyLoss (both outputs used)',
    rule: 'SoftmaxCrossEntropyLoss',
    inputs: [{ shape: [3, 4], range: [-2, 2] }],
    build: (g, [a]) => {
      const { loss, logProb } = op.softmaxCrossEntropy(a, int64Constant(g, [3], [1, 0, 3]));
      return op.add(op.reduceSum(logProb, [1], false), loss);
    },
  },
  {
    name: 'GatherElements (repeated picks)',
    rule: 'GatherElements',
    inputs: [{ shape: [3, 4] }],
    build: (g, [a]) => op.gatherElements(a, int64Constant(g, [3, 2], [0, 0, 3, 1, 2, 2]), 1),
  },
];

/** Fused kernels that ONNX Runtime's CPU provider has only in float32: their rules are checked
 * in float32 against finite differences of the same function built from float64 primitives. */
interface Float32Case extends Case {
  reference: (g: Graph, x: Value[]) => Value;
}

function rmsNormReference(x: Value, gamma: Value, eps: number): Value {
  const inverseRms = op.reciprocal(op.sqrt(op.add(op.reduceMean(op.mul(x, x), [-1]), op.scalarLike(x, eps))));
  return op.mul(op.mul(x, inverseRms), gamma);
}

/** rotate_half RoPE from primitives on x [B, T, heads·hd], positions [B, T]. */
function ropeReference(
  g: Graph,
  x: Value,
  positions: number[],
  cosTable: number[],
  sinTable: number[],
  heads: number,
): Value {
  const [B, T, width] = x.staticShape();
  const hd = width / heads;
  const half = hd / 2;
  const pick = (table: number[]) => {
    const values: number[] = [];
    for (const p of positions) values.push(...table.slice(p * half, (p + 1) * half));
    return g.constant(op.tensorOf('float64', [B, T, 1, half], values), 'table');
  };
  const cos = pick(cosTable);
  const sin = pick(sinTable);
  const [x1, x2] = op.split(op.reshape(x, [B, T, heads, hd]), -1, [half, half]);
  const rotated = op.concat([op.sub(op.mul(x1, cos), op.mul(x2, sin)), op.add(op.mul(x2, cos), op.mul(x1, sin))], -1);
  return op.reshape(rotated, [B, T, width]);
}

const ropePositions = [0, 3, 1, 2, 2, 0];
const ropeCos = Array.from({ length: 4 * 2 }, (_, i) => Math.cos(0.7 * i + 0.1));
const ropeSin = Array.from({ length: 4 * 2 }, (_, i) => Math.sin(0.7 * i + 0.1));

const float32Cases: Float32Case[] = [
  {
    name: 'SimplifiedLayerNormalization (RMSNorm), x and gamma',
    rule: 'SimplifiedLayerNormalization',
    inputs: [{ shape: [2, 3, 5] }, { shape: [5], range: [0.5, 1.5] }],
    build: (g, [x, gamma]) => op.rmsNormalization(x, gamma, 1e-5),
    reference: (g, [x, gamma]) => rmsNormReference(x, gamma, 1e-5),
  },
  {
    name: 'QuickGelu alpha 1 (SiLU)',
    rule: 'com.microsoft.QuickGelu',
    inputs: [{ shape: [2, 7], range: [-4, 4] }],
    build: (g, [x]) => op.silu(x),
    reference: (g, [x]) => op.mul(x, op.sigmoid(x)),
  },
  {
    name: 'QuickGelu alpha 1.702',
    rule: 'com.microsoft.QuickGelu',
    inputs: [{ shape: [2, 7], range: [-4, 4] }],
    build: (g, [x]) =>
      g.node(
        'QuickGelu',
        [x],
        { alpha: { float: 1.702 } },
        [{ dtype: x.dtype, shape: x.shape }],
        undefined,
        false,
        'com.microsoft',
      )[0],
    reference: (g, [x]) => op.mul(x, op.sigmoid(op.mul(x, op.scalarLike(x, 1.702)))),
  },
  {
    name: 'RotaryEmbedding (rotate_half, 2 heads)',
    rule: 'com.microsoft.RotaryEmbedding',
    inputs: [{ shape: [2, 3, 8] }],
    build: (g, [x]) =>
      op.rotaryEmbedding(
        x,
        int64Constant(g, [2, 3], ropePositions),
        g.constant(op.tensorOf('float32', [4, 2], ropeCos), 'cos'),
        g.constant(op.tensorOf('float32', [4, 2], ropeSin), 'sin'),
        2,
      ),
    reference: (g, [x]) => ropeReference(g, x, ropePositions, ropeCos, ropeSin, 2),
  },
];

describe('gradient rules against central finite differences (float64, ONNX Runtime)', () => {
  const covered = new Set<string>();
  for (const c of cases) {
    it(c.name, async () => {
      const { relativeErrors, ops } = await checkGradients(c.inputs, c.build);
      assert.ok(ops.includes(c.rule), `case does not use ${c.rule}: ${ops.join(', ')}`);
      covered.add(c.rule);
      relativeErrors.forEach((e, i) => assert.ok(e < 1e-6, `input ${i}: relative error ${e}`));
    });
  }

  for (const c of float32Cases) {
    it(`${c.name} (float32 kernel; finite differences of a float64 reference)`, async () => {
      const { relativeErrors, ops } = await checkGradients(c.inputs, c.build, {
        dtype: 'float32',
        reference: c.reference,
      });
      assert.ok(ops.includes(c.rule), `case does not use ${c.rule}: ${ops.join(', ')}`);
      covered.add(c.rule);
      // float32 rounding of the analytic gradient bounds the agreement at ~1e-7 relative.
      relativeErrors.forEach((e, i) => assert.ok(e < 1e-5, `input ${i}: relative error ${e}`));
    });
  }

  it('a composite: fan-in, where one value is used three times', async () => {
    const { relativeErrors } = await checkGradients([{ shape: [3, 4] }, { shape: [4, 4] }], (g, [x, w]) => {
      const h = op.matmul(x, w); // x used by MatMul, Mul and Add: three gradient contributions
      return op.add(op.mul(op.tanh(h), x), op.softmax(op.add(x, h), -1));
    });
    relativeErrors.forEach((e, i) => assert.ok(e < 1e-6, `input ${i}: relative error ${e}`));
  });

  it('every rule in the table has a finite-difference case', () => {
    const missing = Object.keys(GRADIENT_RULES).filter((rule) => !covered.has(rule));
    assert.deepEqual(missing, [], `rules without a passing case: ${missing.join(', ')}`);
  });
});

describe('autodiff walk', () => {
  it('fails loudly on a missing rule, naming the op and the value', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const y = op.sin(x);
    const loss = op.reduceSum(y, [0], false);
    assert.throws(
      () => gradients(g, loss, [x]),
      (e: Error) => /no gradient rule for op Sin/.test(e.message) && e.message.includes(y.name),
    );
  });

  it('does no gradient work for frozen inputs (only the input-gradient MatMul is added)', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 8, 4]);
    const frozen = g.initializer('w', { dtype: 'float32', shape: [4, 4], data: new Float32Array(16) });
    const h = op.matmul(op.matmul(x, frozen), frozen);
    const trainable = g.input('a', 'float32', [4, 4]);
    const loss = op.reduceSum(op.matmul(h, trainable), [0, 1, 2], false);
    const before = g.nodes.length;
    const grads = gradients(g, loss, [trainable]);
    const added = g.nodes.slice(before);
    const products = added.filter((n) => n.op === 'MatMul' || n.op === 'FusedMatMul');
    assert.equal(products.length, 1, `expected one product, got ${added.map((n) => n.op).join(', ')}`);
    assert.deepEqual(grads.get(trainable)!.shape, [4, 4]);
  });

  it('sums fan-in and gives zeros for an input the loss does not depend on', async () => {
    const g = new Graph();
    const x = g.input('x', 'float64', [3]);
    const unused = g.input('u', 'float64', [2]);
    const loss = op.reduceSum(op.add(op.mul(x, x), x), [0], false); // d/dx = 2x + 1
    const grads = gradients(g, loss, [x, unused]);
    g.output(grads.get(x)!, 'dx');
    g.output(grads.get(unused)!, 'du');
    const session = await ort.InferenceSession.create(serializeModel(g).model);
    const xs = Float64Array.from([0.5, -2, 3]);
    const out = await session.run({
      x: new ort.Tensor('float64', xs, [3]),
      u: new ort.Tensor('float64', new Float64Array(2), [2]),
    });
    assert.deepEqual(
      Array.from(out.dx.data as Float64Array),
      Array.from(xs, (v) => 2 * v + 1),
    );
    assert.deepEqual(Array.from(out.du.data as Float64Array), [0, 0]);
  });

  it('attention softmax: the backward reads the [.., T, T] probabilities twice, not four times', () => {
    const g = new Graph();
    const scores = g.input('s', 'float32', [2, 4, 8, 8]);
    const values = g.input('v', 'float32', [2, 4, 8, 3]);
    const probs = op.softmax(scores, -1);
    const loss = op.reduceSum(op.matmul(probs, values), [0, 1, 2, 3], false);
    const before = g.nodes.length;
    gradients(g, loss, [scores]);
    const square = g.nodes.slice(before).filter((n) => n.inputs.some((v) => v && sameShape(v.shape, probs.shape)));
    // dP = dC·Vᵀ, then dS = P·(dP − rowDot): a Sub and a Mul; no Mul + ReduceSum over P.
    assert.deepEqual(square.map((n) => n.op).sort(), ['Mul', 'Sub']);
  });

  it('rejects a loss with more than one element without a seed', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    assert.throws(() => gradients(g, op.exp(x), [x]), /must have one element/);
  });
});
