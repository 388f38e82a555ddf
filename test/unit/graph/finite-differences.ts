import * as ort from 'onnxruntime-node';
import { gradients } from '../../../trainer/compute/graph/autodiff';
import { Graph, type Value } from '../../../trainer/compute/graph/graph';
import { serializeModel } from '../../../trainer/compute/graph/onnx';
import * as op from '../../../trainer/compute/graph/ops';
import { type DType, elementCount } from '../../../trainer/model/tensor';

// Checks autodiff against central finite differences: the loss is Σ(out · R) with a fixed random
// R, so every output element matters with its own weight; both the analytic gradients and the
// perturbed losses come from real ONNX Runtime sessions.

/** A small seeded generator for test data (mulberry32; a test helper, not model code). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface InputSpec {
  shape: number[];
  /** Range of the uniform random values (default [-1, 1]). */
  range?: [number, number];
}

export interface CheckResult {
  /** max |analytic − numeric| / max |numeric|, per input. */
  relativeErrors: number[];
  /** Op types of the forward graph (to know which rules a case exercised). */
  ops: string[];
}

function toOrt(dtype: DType, shape: number[], values: Float64Array): ort.Tensor {
  return dtype === 'float64'
    ? new ort.Tensor('float64', values, shape)
    : new ort.Tensor('float32', Float32Array.from(values), shape);
}

/**
 * `build` is differentiated in `dtype`. Finite differences run on the same graph, or, for kernels
 * that exist only in float32, on `reference`: the same function from primitives in float64.
 */
export async function checkGradients(
  specs: InputSpec[],
  build: (graph: Graph, inputs: Value[]) => Value,
  options: { dtype?: DType; seed?: number; step?: number; reference?: (graph: Graph, inputs: Value[]) => Value } = {},
): Promise<CheckResult> {
  const dtype = options.dtype ?? 'float64';
  const random = seededRandom(options.seed ?? 1234);
  const lossGraph = (graphDtype: DType, body: (graph: Graph, inputs: Value[]) => Value, withGradients: boolean) => {
    const graph = new Graph('fd');
    const inputs = specs.map((s, i) => graph.input(`x${i}`, graphDtype, s.shape));
    const out = body(graph, inputs);
    const outShape = out.staticShape();
    const r = graph.constant(op.tensorOf(out.dtype, outShape, weights(outShape)), 'r');
    const loss = op.reduceSum(
      op.mul(out, r),
      Array.from({ length: out.rank }, (_, i) => i),
      false,
    );
    graph.output(loss, 'loss');
    if (withGradients) {
      const grads = gradients(graph, loss, inputs);
      inputs.forEach((x, i) => graph.output(grads.get(x)!, `grad_${i}`));
    }
    return graph;
  };
  let cachedWeights: number[] | undefined;
  const weights = (shape: number[]) =>
    (cachedWeights ??= Array.from({ length: elementCount(shape) }, () => random() * 2 - 1));

  const graph = lossGraph(dtype, build, true);
  const ops = graph.nodes.map((n) => (n.domain ? `${n.domain}.${n.op}` : n.op));
  // 'basic': ORT's contrib fusions (e.g. x·σ(x) → QuickGelu) have float32 kernels only.
  const open = async (g: Graph) =>
    ort.InferenceSession.create(serializeModel(g).model, { logSeverityLevel: 3, graphOptimizationLevel: 'basic' });
  const session = await open(graph);
  const fdDtype = options.reference ? 'float64' : dtype;
  const fdSession = options.reference ? await open(lossGraph('float64', options.reference, false)) : session;
  const values = specs.map((s) => {
    const [lo, hi] = s.range ?? [-1, 1];
    return Float64Array.from({ length: elementCount(s.shape) }, () => lo + (hi - lo) * random());
  });
  const feeds = (feedDtype: DType) =>
    Object.fromEntries(specs.map((s, i) => [`x${i}`, toOrt(feedDtype, s.shape, values[i])]));
  const analytic = await session.run(feeds(dtype));
  const lossAt = async () => Number((await fdSession.run(feeds(fdDtype), ['loss'])).loss.data[0]);

  const step = options.step ?? 1e-5;
  const relativeErrors: number[] = [];
  for (let i = 0; i < specs.length; i++) {
    const got = analytic[`grad_${i}`].data as Float64Array | Float32Array;
    let maxDiff = 0;
    let maxNumeric = 0;
    for (let k = 0; k < values[i].length; k++) {
      const saved = values[i][k];
      values[i][k] = saved + step;
      const up = await lossAt();
      values[i][k] = saved - step;
      const down = await lossAt();
      values[i][k] = saved;
      const numeric = (up - down) / (2 * step);
      maxDiff = Math.max(maxDiff, Math.abs(got[k] - numeric));
      maxNumeric = Math.max(maxNumeric, Math.abs(numeric));
    }
    relativeErrors.push(maxDiff / Math.max(maxNumeric, 1e-12));
  }
  await session.release();
  if (fdSession !== session) await fdSession.release();
  return { relativeErrors, ops };
}
