import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { type SerializedModel, tensorBytes } from '../graph/onnx';
import type { HostTensor } from '../../model/tensor';
import { makeStagingFolder, stagingWriteError } from './staging';

// ONNX Runtime sessions with the engine's defaults, the fastest measured for these graphs on the
// CPU: the memory arena on, sequential execution, one intra-op thread per core. Runs only inside
// the engine worker: session.run() blocks its thread.

export type OptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface RuntimeSessionOptions {
  /** Intra-op threads; default: every core. */
  threads?: number;
  /** Default 'all'. */
  optimization?: OptimizationLevel;
  /** Writes ORT's per-node profile (JSON) to files starting with this prefix. */
  profilePrefix?: string;
  /**
   * Whether idle intra-op threads spin between kernels (ORT's default: yes). Spinning saves the
   * wake-up per parallel kernel on an idle machine; on a shared one the spinning thread takes the
   * core from the thread with work (training steps were 12-19% faster without it under load).
   */
  spinning?: boolean;
  /** Other ORT session config entries, e.g. { 'session.dynamic_block_base': '4' }. */
  sessionConfig?: Record<string, string>;
}

export function defaultThreadCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

export async function openSession(
  model: SerializedModel,
  options: RuntimeSessionOptions = {},
): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model.model, {
    externalData:
      model.externalData.byteLength > 0 ? [{ path: model.externalDataName, data: model.externalData }] : undefined,
    ...sessionOptions(options),
  });
}

/**
 * Opens the model `build` serializes, each frozen weight written to a file of its own in a
 * temporary folder as the graph takes it (`sink`, Graph.weightSink): ONNX Runtime maps those
 * files rather than copying them, and drops each mapping once a kernel has packed it, so a large
 * model's weights are never in memory twice. The folder is removed once the session is open, and
 * by a later process when this one dies first (staging.ts).
 */
export async function openSessionFromFiles(
  build: (sink: (name: string, tensor: HostTensor) => string) => SerializedModel,
  options: RuntimeSessionOptions = {},
): Promise<ort.InferenceSession> {
  const dir = makeStagingFolder();
  let written = 0;
  const write = (file: string, bytes: Uint8Array) => {
    try {
      fs.writeFileSync(file, bytes);
    } catch (error) {
      throw stagingWriteError(error, dir, written);
    }
    written += bytes.byteLength;
  };
  try {
    let files = 0;
    const model = build((_name, tensor) => {
      const file = `weight.${files++}`;
      write(path.join(dir, file), tensorBytes(tensor));
      return file;
    });
    const modelPath = path.join(dir, 'model.onnx');
    write(modelPath, model.model);
    return await ort.InferenceSession.create(modelPath, sessionOptions(options));
  } finally {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // Windows keeps a mapped file: the folder stays in the temp dir until the OS clears it.
    }
  }
}

function sessionOptions(options: RuntimeSessionOptions): ort.InferenceSession.SessionOptions {
  const threads = options.threads ?? defaultThreadCount();
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`threads must be a positive integer, got ${threads}`);
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: options.optimization ?? 'all',
    enableCpuMemArena: true,
    enableMemPattern: true,
    // Warnings such as "Removing initializer … not used" are noise for generated graphs.
    logSeverityLevel: 3,
    enableProfiling: options.profilePrefix !== undefined,
    profileFilePrefix: options.profilePrefix,
    extra: nestConfig({
      ...(options.spinning === false ? { 'session.intra_op.allow_spinning': '0' } : {}),
      ...options.sessionConfig,
    }),
  };
}

/** 'a.b.c': 'v' → { a: { b: { c: 'v' } } }: the shape onnxruntime-node flattens back into config keys. */
function nestConfig(entries: Record<string, string>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entries)) {
    const parts = key.split('.');
    let node = root;
    for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
    node[parts[parts.length - 1]] = value;
  }
  return root;
}

/** Wraps a HostTensor as an ort.Tensor without copying. */
export function toOrtTensor(tensor: HostTensor): ort.Tensor {
  if (tensor.dtype === 'float16') return new ort.Tensor('float16', tensor.data as Uint16Array, tensor.shape);
  return new ort.Tensor(tensor.dtype, tensor.data as never, tensor.shape);
}

/** A HostTensor view of an ort.Tensor (no copy). */
export function fromOrtTensor(tensor: ort.Tensor): HostTensor {
  const dtype = tensor.type;
  switch (dtype) {
    case 'float32':
    case 'float64':
    case 'float16':
    case 'int32':
    case 'int64':
    case 'int8':
    case 'uint8':
    case 'bool':
      return { dtype, shape: [...tensor.dims], data: tensor.data as HostTensor['data'] };
    default:
      throw new Error(`unsupported output tensor type ${dtype}`);
  }
}
