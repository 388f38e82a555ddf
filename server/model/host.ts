// Which base model (and adapter) serves completions, and the one object the completion pipeline
// asks for it. Loading and decoding happen in the engine's worker thread, never on the server's
// main thread (ORT's run() blocks the event loop).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModelConfig } from '../../trainer/model/config';
import type { FimTokenIds, PromptTokenizer } from '../completion/prompt';
import type { ModelInfo } from '../protocol';

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
 * Loads the model in `dir`. The checkpoint is validated here (config.json, weights present) so a
 * bad path gives one clear line; the engine's worker then does the loading proper.
 */
export async function loadModel(dir: string): Promise<ModelLoadResult> {
  if (dir === '') return { model: null, reason: 'no base model is configured and none is bundled yet (set idiom.baseModelPath)' };
  if (!fs.existsSync(dir)) return { model: null, reason: `base model directory ${dir} does not exist` };
  const config = loadModelConfig(dir); // throws one clear line on a missing or malformed config.json
  const weights = ['model.safetensors', 'model.safetensors.index.json'].find((file) => fs.existsSync(path.join(dir, file)));
  if (!weights) return { model: null, reason: `${dir} has no model.safetensors` };
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) return { model: null, reason: `${dir} has no tokenizer.json` };
  // The engine's generation loop (prefill + decode with KV cache in the worker) is not in this
  // build yet: say so instead of serving anything else.
  return {
    model: null,
    reason: `${path.basename(dir)} (${config.modelType}, ${config.numLayers} layers) found, but the engine cannot decode yet`,
  };
}
