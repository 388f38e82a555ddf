import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

// llama.cpp for the tests, through node-llama-cpp from test/llama/runtime/ (its own lockfile,
// installed by test/llama/runtime/install.sh, never a dependency of Idiom). Loaded by a computed
// path, so the type check and the root install never need it.

const RUNTIME = path.join(__dirname, 'runtime', 'node_modules', 'node-llama-cpp', 'dist', 'index.js');

/** The few node-llama-cpp calls the tests make (its types live in the runtime folder). */
interface LlamaSequence {
  dispose(): void;
  clearHistory(): Promise<void>;
  controlledEvaluate(
    input: Array<number | [number, { generateNext: { logits?: boolean; token?: boolean; options?: object } }]>,
  ): Promise<Array<{ next: { token?: number | null; logits?: Map<number, number> } } | undefined>>;
}
interface LlamaContext {
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}
interface LlamaModel {
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[], specialTokens?: boolean): string;
  createContext(options: object): Promise<LlamaContext>;
  dispose(): Promise<void>;
}
interface Llama {
  loadModel(options: { modelPath: string; gpuLayers?: number }): Promise<LlamaModel>;
  dispose(): Promise<void>;
}

export function llamaRuntimeInstalled(): boolean {
  return fs.existsSync(RUNTIME);
}

/** llama.cpp on the CPU, quiet; the caller disposes it. */
export async function loadLlama(): Promise<Llama> {
  const module = (await import(pathToFileURL(RUNTIME).href)) as {
    getLlama(options: object): Promise<Llama>;
    LlamaLogLevel: Record<string, string>;
  };
  return module.getLlama({
    gpu: false,
    build: 'never',
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    logLevel: module.LlamaLogLevel.error,
  });
}

export interface LlamaRun {
  /** Next-token logits after the prompt, by token id (vocabSize long). */
  logits: Float32Array;
  /** Greedy continuation by llama.cpp's own sampler (temperature 0). */
  greedy: number[];
}

/**
 * The model at `modelPath` with the adapter at `loraPath` (or none): logits after `prompt` and
 * `steps` greedy tokens. The KV cache is f32 so only the weights' precision differs from Idiom.
 */
export async function runLlama(
  llama: Llama,
  modelPath: string,
  loraPath: string | null,
  prompt: readonly number[],
  steps: number,
  vocabSize: number,
): Promise<LlamaRun & { model: LlamaModel }> {
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: Math.max(64, prompt.length + steps + 8),
    batchSize: 512,
    threads: 2,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    ...(loraPath ? { lora: { adapters: [{ filePath: loraPath, scale: 1 }] } } : {}),
  });
  const sequence = context.getSequence();
  const greedyNext = { generateNext: { token: true, options: { temperature: 0 } } };
  const input: Parameters<LlamaSequence['controlledEvaluate']>[0] = prompt.map((t) => t);
  input[input.length - 1] = [prompt[prompt.length - 1], { generateNext: { ...greedyNext.generateNext, logits: true } }];
  const first = (await sequence.controlledEvaluate(input))[prompt.length - 1];
  const logits = new Float32Array(vocabSize).fill(Number.NaN);
  for (const [token, value] of first?.next.logits ?? []) if (token < vocabSize) logits[token] = value;
  const greedy: number[] = [];
  let next = first?.next.token ?? null;
  while (next !== null && greedy.length < steps) {
    greedy.push(next);
    if (greedy.length === steps) break;
    next = (await sequence.controlledEvaluate([[next, greedyNext]]))[0]?.next.token ?? null;
  }
  await context.dispose();
  return { logits, greedy, model };
}
