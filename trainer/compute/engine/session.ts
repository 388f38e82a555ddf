import * as ort from 'onnxruntime-node';
import type { Graph } from '../graph/graph';
import { type SerializeOptions, serializeModel } from '../graph/onnx';
import { type RuntimeSessionOptions, openSession, openSessionFromFiles } from '../runtime/session';

// Graph → ONNX Runtime session with the runtime's defaults (trainer/compute/runtime/session.ts).

export type SessionOptions = SerializeOptions & RuntimeSessionOptions;

export async function createSession(graph: Graph, options: SessionOptions = {}): Promise<ort.InferenceSession> {
  return openSession(serializeModel(graph, options), options);
}

/** The graph `build` makes, its weights written to files as it adds them (openSessionFromFiles). */
export async function createSessionFromFiles(
  build: (weightSink: NonNullable<Graph['weightSink']>) => Graph,
  options: SessionOptions = {},
): Promise<ort.InferenceSession> {
  return openSessionFromFiles((sink) => serializeModel(build(sink), options), options);
}

export function int64Tensor(values: ArrayLike<number>, shape: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(Array.from(values, (v) => BigInt(v))), shape);
}
