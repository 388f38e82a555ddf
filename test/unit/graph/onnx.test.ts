import { strict as assert } from 'node:assert';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../../trainer/compute/graph/graph';
import * as op from '../../../trainer/compute/graph/ops';
import { serializeModel } from '../../../trainer/compute/graph/onnx';

async function run(graph: Graph, feeds: Record<string, ort.Tensor>) {
  const { model, externalData, externalDataName } = serializeModel(graph);
  const session = await ort.InferenceSession.create(model, {
    externalData: externalData.byteLength > 0 ? [{ path: externalDataName, data: externalData }] : undefined,
  });
  return session.run(feeds);
}

describe('graph → ONNX', () => {
  it('runs a matmul + bias with the weight in external data and a symbolic batch dim', async () => {
    const g = new Graph('affine');
    const x = g.input('x', 'float32', ['N', 3]);
    const wValues = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const w = g.initializer('w', { dtype: 'float32', shape: [3, 2], data: wValues });
    const b = g.initializer('b', { dtype: 'float32', shape: [2], data: Float32Array.from([0.5, -1]) }, false);
    const y = op.add(op.matmul(x, w), b);
    assert.deepEqual(y.shape, ['N', 2]);
    g.output(y, 'y');
    const xs = Float32Array.from([1, 0, 2, -1, 1, 1]);
    const out = await run(g, { x: new ort.Tensor('float32', xs, [2, 3]) });
    const got = out.y.data as Float32Array;
    for (let n = 0; n < 2; n++) {
      for (let j = 0; j < 2; j++) {
        let expected = j === 0 ? 0.5 : -1;
        for (let k = 0; k < 3; k++) expected += xs[n * 3 + k] * wValues[k * 2 + j];
        assert.ok(Math.abs(got[n * 2 + j] - expected) < 1e-6, `y[${n},${j}] = ${got[n * 2 + j]}, want ${expected}`);
      }
    }
  });

  it('infers shapes and rejects mismatched ones at build time', () => {
    const g = new Graph();
    const a = g.input('a', 'float32', [2, 3, 4]);
    const b = g.input('b', 'float32', [4, 5]);
    assert.deepEqual(op.matmul(a, b).shape, [2, 3, 5]);
    assert.deepEqual(op.transpose(a, [0, 2, 1]).shape, [2, 4, 3]);
    assert.deepEqual(op.reshape(a, [0, -1]).shape, [2, 12]);
    assert.deepEqual(op.reduceSum(a, [-1]).shape, [2, 3, 1]);
    assert.deepEqual(
      op.split(a, 2, [1, 3]).map((v) => v.shape),
      [
        [2, 3, 1],
        [2, 3, 3],
      ],
    );
    assert.throws(() => op.matmul(b, a), /MatMul: inner dimensions differ/);
    assert.throws(() => op.add(a, g.input('c', 'float32', [5])), /Add: cannot broadcast/);
  });

  it('outputAs names a computed value as an output without an Identity copy, and copies otherwise', async () => {
    const g = new Graph('outputs');
    const x = g.input('x', 'float32', [3]);
    const doubled = op.add(x, x);
    const consumed = op.mul(doubled, x);
    g.outputAs(doubled, 'doubled');
    g.outputAs(doubled, 'again'); // already an output: through an Identity
    g.outputAs(x, 'same'); // a graph input: through an Identity
    g.outputAs(consumed, 'product');
    assert.equal(g.nodes.filter((n) => n.op === 'Identity').length, 2);
    const out = await run(g, { x: new ort.Tensor('float32', Float32Array.from([1, 2, 3]), [3]) });
    assert.deepEqual([...(out.doubled.data as Float32Array)], [2, 4, 6]);
    assert.deepEqual([...(out.again.data as Float32Array)], [2, 4, 6]);
    assert.deepEqual([...(out.same.data as Float32Array)], [1, 2, 3]);
    assert.deepEqual([...(out.product.data as Float32Array)], [2, 8, 18]);
  });
});
