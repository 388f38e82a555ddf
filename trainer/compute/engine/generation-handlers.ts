import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../../model/lazy-weights';
import type { HostTensor } from '../../model/tensor';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { type ContinuationScore, type GenerateOptions, type GenerateResult, Generator } from './generate';
import { KvCacheSession, type KvCacheSessionOptions } from './inference';
import type { LoraAdapter } from './weights';

// Worker-side handlers for generation (spread into the worker by trainer/worker.ts). Models, their
// KV caches and the generation loop stay in the worker; one message per completion, not per token.

interface LoadedModel {
  generator: Generator;
  /** Ids generation always stops at: every special token of the tokenizer and config.json's eos. */
  stopIds: number[];
  /** Ids at or above this are never generated (the tokenizer's vocabulary). */
  vocabSize: number;
  tokenizer: Tokenizer | null;
  cancelRequested: boolean;
}

const models = new Map<number, LoadedModel>();
let nextModelId = 1;

function modelById(id: number): LoadedModel {
  const model = models.get(id);
  if (!model) throw new Error(`no model ${id} (disposed or never loaded)`);
  return model;
}

/** An adapter as it crosses threads: plain records of tensors. */
export interface AdapterMessage {
  scaling: number;
  /** PEFT module path → A [r, in], B [out, r]. */
  modules: Record<string, { a: HostTensor; b: HostTensor }>;
}

export type LoadModelOptions = Omit<KvCacheSessionOptions, 'mergedAdapter'> & { mergedAdapter?: AdapterMessage };

export interface GenerateRequest extends Omit<GenerateOptions, 'decode' | 'cancelled' | 'vocabSize'> {
  /** Token ids, or text to encode with the model's tokenizer.json. */
  prompt: number[] | string;
  /** Extra ids to stop at; the model's special tokens always stop generation. */
  eosTokenIds?: readonly number[];
}

/**
 * Every id a completion must end at and never show: the tokenizer's special tokens (end of text,
 * FIM markers, file separator, chat markers …, also found by name in case they are not flagged
 * special) and config.json's eos ids.
 */
export function stopTokenIds(tokenizer: Tokenizer | null, configEos: number | number[] | undefined): number[] {
  const ids = new Set<number>(configEos === undefined ? [] : [configEos].flat());
  if (tokenizer) {
    for (const id of tokenizer.specialIds) ids.add(id);
    for (const id of [
      tokenizer.eos,
      tokenizer.fileSeparator,
      tokenizer.fim?.prefix,
      tokenizer.fim?.suffix,
      tokenizer.fim?.middle,
      tokenizer.fim?.end,
    ]) {
      if (id !== null && id !== undefined) ids.add(id);
    }
  }
  return [...ids].sort((a, b) => a - b);
}

function toAdapter(message: AdapterMessage): LoraAdapter {
  return { scaling: message.scaling, modules: new Map(Object.entries(message.modules)) };
}

export const generationHandlers = {
  /**
   * Loads a HF checkpoint folder (and its tokenizer.json when present) and builds its decoder.
   * Weights are read tensor by tensor as the decoder takes them (quantized at int8/int4).
   */
  async loadModel(dir: string, options: LoadModelOptions = {}) {
    const checkpoint = await openCheckpoint(dir);
    const tokenizer = fs.existsSync(path.join(dir, 'tokenizer.json')) ? await Tokenizer.load(dir) : null;
    const { mergedAdapter, ...rest } = options;
    const vocabSize = Math.min(checkpoint.config.vocabSize, tokenizer?.vocabSize ?? Infinity);
    const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, {
      vocabLimit: vocabSize,
      ...rest,
      mergedAdapter: mergedAdapter ? toAdapter(mergedAdapter) : undefined,
    });
    const id = nextModelId++;
    const stopIds = stopTokenIds(tokenizer, checkpoint.config.eosTokenId);
    models.set(id, { generator: new Generator(session), stopIds, vocabSize, tokenizer, cancelRequested: false });
    return {
      id,
      config: checkpoint.config,
      sha256: checkpoint.sha256,
      hasTokenizer: tokenizer !== null,
      stopIds,
      vocabSize,
    };
  },

  /** Switches the adapter of a model loaded with loraInputs (null = the base); clears its cache. */
  async setAdapter(id: number, adapter: AdapterMessage | null) {
    const model = modelById(id);
    model.generator.session.setAdapter(adapter ? toAdapter(adapter) : undefined);
    model.generator.reset();
  },

  async generate(id: number, request: GenerateRequest): Promise<GenerateResult> {
    const model = modelById(id);
    const { prompt, ...options } = request;
    let ids: number[];
    if (typeof prompt === 'string') {
      if (!model.tokenizer) throw new Error('this model has no tokenizer.json: pass token ids');
      ids = model.tokenizer.encode(prompt);
    } else {
      ids = prompt;
    }
    model.cancelRequested = false;
    const tokenizer = model.tokenizer;
    return model.generator.generate(ids, {
      ...options,
      eosTokenIds: [...model.stopIds, ...(options.eosTokenIds ?? [])],
      vocabSize: model.vocabSize,
      decode: tokenizer ? (tokens) => tokenizer.decode(tokens) : undefined,
      cancelled: () => model.cancelRequested,
    });
  },

  /** How likely the model (with its current adapter) finds `continuation` after `prompt` (token ids). */
  async scoreContinuation(id: number, prompt: number[], continuation: number[]): Promise<ContinuationScore> {
    const model = modelById(id);
    return model.generator.scoreContinuation(prompt, continuation, model.vocabSize);
  },

  /**
   * Per-token negative log-likelihood (nats) of fixed-length token windows, for evaluation and
   * review: result[w·(T − 1) + i] = −log p(windows[w][i + 1] | windows[w][0..i]), T the common
   * window length, normalized over the tokenizer's vocabulary. Uses the model's current adapter,
   * or the base model with `base: true` (models loaded with loraInputs). The completion cache is
   * kept.
   */
  async score(
    id: number,
    windows: readonly (readonly number[])[],
    options: { base?: boolean } = {},
  ): Promise<Float32Array> {
    const model = modelById(id);
    if (windows.length === 0) return new Float32Array(0);
    const T = windows[0].length;
    if (T < 2) throw new Error(`score needs windows of at least 2 tokens, got ${T}`);
    const uneven = windows.findIndex((w) => w.length !== T);
    if (uneven >= 0)
      throw new Error(
        `score needs windows of one length: window ${uneven} has ${windows[uneven].length} tokens, window 0 has ${T}`,
      );
    const result = new Float32Array(windows.length * (T - 1));
    for (const [w, window] of windows.entries()) {
      result.set(await model.generator.session.nll(window, { base: options.base }), w * (T - 1));
    }
    return result;
  },

  /** Ends the model's running generation after the current token (it resolves as 'cancelled'). */
  async cancelGeneration(id: number) {
    modelById(id).cancelRequested = true;
  },

  async disposeModel(id: number) {
    const model = modelById(id);
    models.delete(id);
    await model.generator.session.dispose();
  },
};

type GenerationHandlers = typeof generationHandlers;

// Registers these methods with the engine worker's typed client (see compute/runtime/handlers.ts).
declare module '../runtime/handlers' {
  interface WorkerHandlers extends GenerationHandlers {}
}
