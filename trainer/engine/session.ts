import * as ort from 'onnxruntime-node';
import { Graph } from '../graph/graph';
import { SerializeOptions, serializeModel } from '../graph/onnx';
import { HostTensor } from '../tensor';

// One place that turns a Graph into an ONNX Runtime session with the engine's defaults.

export interface SessionOptions extends SerializeOptions {
  /** Intra-op threads; default: ORT's choice (all cores). */
  threads?: number;
}

export async function createSession(graph: Graph, options: SessionOptions = {}): Promise<ort.InferenceSession> {
  const { model, externalData, externalDataName } = serializeModel(graph, options);
  return ort.InferenceSession.create(model, {
    externalData: externalData.byteLength > 0 ? [{ path: externalDataName, data: externalData }] : undefined,
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableCpuMemArena: true,
  });
}

/** Wraps a HostTensor as an ort.Tensor without copying. */
export function toOrtTensor(tensor: HostTensor): ort.Tensor {
  if (tensor.dtype === 'float16') return new ort.Tensor('float16', tensor.data as Uint16Array, tensor.shape);
  return new ort.Tensor(tensor.dtype, tensor.data as never, tensor.shape);
}

export function int64Tensor(values: ArrayLike<number>, shape: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(Array.from(values, (v) => BigInt(v))), shape);
}
