import { threadId } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';
import type { SerializedModel } from '../graph/onnx';
import type { HostTensor } from '../../model/tensor';
import { type RuntimeSessionOptions, fromOrtTensor, openSession, toOrtTensor } from './session';

// Generic session handlers: run any serialized graph inside the worker. Sessions live in this
// module's scope (the worker's), addressed by the id createSession returns.

const sessions = new Map<number, ort.InferenceSession>();
let nextSessionId = 1;

function sessionById(id: number): ort.InferenceSession {
  const session = sessions.get(id);
  if (!session) throw new Error(`no session ${id} (released or never created)`);
  return session;
}

export const sessionHandlers = {
  async createSession(model: SerializedModel, options: RuntimeSessionOptions = {}) {
    const session = await openSession(model, options);
    const id = nextSessionId++;
    sessions.set(id, session);
    return { id, inputNames: [...session.inputNames], outputNames: [...session.outputNames] };
  },

  /** Runs a session; `fetch` limits which outputs come back (ORT still computes every node). */
  async runSession(
    id: number,
    feeds: Record<string, HostTensor>,
    fetch?: string[],
  ): Promise<Record<string, HostTensor>> {
    const session = sessionById(id);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, tensor] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(tensor);
    const results = fetch ? await session.run(ortFeeds, fetch) : await session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [name, value] of Object.entries(results)) out[name] = fromOrtTensor(value as ort.Tensor);
    return out;
  },

  /**
   * Benchmarks: runs a session `repeats` times on the same feeds (converted once, outside the
   * timing) and returns each run's milliseconds. Outputs are discarded.
   */
  async timeSession(id: number, feeds: Record<string, HostTensor>, repeats: number): Promise<number[]> {
    const session = sessionById(id);
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, tensor] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(tensor);
    const times: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const started = performance.now();
      await session.run(ortFeeds);
      times.push(performance.now() - started);
    }
    return times;
  },

  async releaseSession(id: number) {
    const session = sessionById(id);
    sessions.delete(id);
    await session.release();
  },

  /** Profiling: ends ORT's profile of a session (opened with profilePrefix); ORT writes the JSON file. */
  async endProfiling(id: number) {
    const session = sessionById(id);
    session.endProfiling();
  },

  async ping() {
    return { pid: process.pid, threadId };
  },

  /** Fails on purpose: lets tests check that errors cross the thread boundary intact. */
  async fail(message: string): Promise<never> {
    throw new Error(message);
  },

  /** Kills the worker thread abruptly: lets tests check that a crash rejects pending calls. */
  async crash(): Promise<never> {
    setImmediate(() => {
      throw new Error('engine worker crashed on purpose');
    });
    return new Promise<never>(() => {});
  },
};
