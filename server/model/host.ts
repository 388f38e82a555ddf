// Which base model (and adapter) serves completions, and the one object the completion pipeline
// asks for it. Loading and decoding happen in the engine's worker thread, never on the server's
// main thread (ORT's run() blocks the event loop).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModelConfig } from '../../trainer/model/config';
import type { FimTokenIds, PromptTokenizer } from '../completion/prompt';
import type { ModelInfo } from '../protocol';
import { EngineWorker } from '../../trainer/runtime/client';
import { Tokenizer } from '../../trainer/tokenizer/tokenizer';

export interface GenerateOptions {
  maxNewTokens: number;
  signal: AbortSignal;
  /** Called with each newly decoded piece of text. */
  onText?: (piece: string) => void;
}

/** A base model (+ adapter) ready to decode. */
export interface LoadedModel {
  info: ModelInfo;
  /** Identity of the weights: changes with the base model or the adapter (cache key). */
  modelKey: string;
  tokenizer: PromptTokenizer;
  fim: FimTokenIds;
  /** Positions the model can attend to: the prompt plus the new tokens must fit. */
  contextLength: number;
  /** Decodes greedily from a FIM prompt until end of text, a stop token or maxNewTokens; returns the decoded text. */
  generate(prompt: Int32Array, options: GenerateOptions): Promise<string>;
  dispose(): Promise<void>;
}

export type ModelLoadResult = { model: LoadedModel } | { model: null; reason: string };

/**
 * Loads the model in `dir` into a fresh engine worker. The checkpoint is checked here first
 * (config.json, weights, tokenizer with FIM tokens) so a bad path gives one clear line.
 */
export async function loadModel(dir: string): Promise<ModelLoadResult> {
  if (dir === '') return { model: null, reason: 'no base model is configured and none is bundled yet (set idiom.baseModelPath)' };
  if (!fs.existsSync(dir)) return { model: null, reason: `base model directory ${dir} does not exist` };
  const config = loadModelConfig(dir); // throws one clear line on a missing or malformed config.json
  const weights = ['model.safetensors', 'model.safetensors.index.json'].find((file) => fs.existsSync(path.join(dir, file)));
  if (!weights) return { model: null, reason: `${dir} has no model.safetensors` };
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) return { model: null, reason: `${dir} has no tokenizer.json` };
  const tokenizer = await Tokenizer.load(dir);
  if (!tokenizer.fim) return { model: null, reason: `${dir}/tokenizer.json has no fill-in-the-middle tokens` };
  const fim = tokenizer.fim;

  const worker = EngineWorker.start();
  let loaded: { id: number; sha256: string };
  try {
    loaded = await worker.call('loadModel', dir, {});
  } catch (error) {
    await worker.terminate();
    throw error;
  }
  const id = loaded.id;
  let busy: Promise<unknown> = Promise.resolve();
  const model: LoadedModel = {
    info: { path: dir, name: path.basename(dir) },
    modelKey: `${loaded.sha256}`,
    tokenizer,
    fim: { prefix: fim.prefix, suffix: fim.suffix, middle: fim.middle },
    contextLength: config.maxPositionEmbeddings,
    async generate(prompt, options) {
      // One generation at a time per model: the worker's cancel flag is per model.
      const previous = busy;
      const run = (async () => {
        await previous.catch(() => undefined);
        if (options.signal.aborted) throw new Error('aborted');
        const onAbort = () => void worker.call('cancelGeneration', id).catch(() => undefined);
        options.signal.addEventListener('abort', onAbort, { once: true });
        try {
          const result = await worker.call('generate', id, { prompt: Array.from(prompt), maxTokens: options.maxNewTokens });
          if (options.signal.aborted || result.stopReason === 'cancelled') throw new Error('aborted');
          const text = result.text ?? tokenizer.decode(result.tokens);
          options.onText?.(text);
          return text;
        } finally {
          options.signal.removeEventListener('abort', onAbort);
        }
      })();
      busy = run;
      return run;
    },
    async dispose() {
      await worker.call('disposeModel', id).catch(() => undefined);
      await worker.terminate();
    },
  };
  return { model };
}
