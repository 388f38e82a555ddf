import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadCheckpoint } from '../model/checkpoint';
import { HostTensor } from '../tensor';
import { Tokenizer } from '../tokenizer/tokenizer';
import { GenerateOptions, GenerateResult, Generator } from './generate';
import { KvCacheSession, KvCacheSessionOptions } from './inference';
import { LoraAdapter } from './weights';

// Worker-side handlers for generation (spread into trainer/runtime/handlers.ts). Models, their
// KV caches and the generation loop stay in the worker; one message per completion, not per token.

interface LoadedModel {
  generator: Generator;
  /** Used when a request names none: the tokenizer's and config.json's end tokens. */
  defaultEos: number[];
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

export interface GenerateRequest extends Omit<GenerateOptions, 'decode' | 'cancelled'> {
  /** Token ids, or text to encode with the model's tokenizer.json. */
  prompt: number[] | string;
}

function toAdapter(message: AdapterMessage): LoraAdapter {
  return { scaling: message.scaling, modules: new Map(Object.entries(message.modules)) };
}

export const generationHandlers = {
  /** Loads a HF checkpoint folder (and its tokenizer.json when present) and builds its decoder. */
  async loadModel(dir: string, options: LoadModelOptions = {}) {
    const checkpoint = await loadCheckpoint(dir);
    const tokenizer = fs.existsSync(path.join(dir, 'tokenizer.json')) ? await Tokenizer.load(dir) : null;
    const { mergedAdapter, ...rest } = options;
    const session = await KvCacheSession.create(checkpoint.config, checkpoint.weights, {
      ...rest,
      mergedAdapter: mergedAdapter ? toAdapter(mergedAdapter) : undefined,
    });
    const id = nextModelId++;
    const eos = checkpoint.config.eosTokenId;
    const defaultEos = [...new Set([...(tokenizer?.eos !== null && tokenizer?.eos !== undefined ? [tokenizer.eos] : []), ...(eos === undefined ? [] : [eos].flat())])];
    models.set(id, { generator: new Generator(session), defaultEos, tokenizer, cancelRequested: false });
    return { id, config: checkpoint.config, sha256: checkpoint.sha256, hasTokenizer: tokenizer !== null };
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
      eosTokenIds: options.eosTokenIds ?? model.defaultEos,
      decode: tokenizer ? (tokens) => tokenizer.decode(tokens) : undefined,
      cancelled: () => model.cancelRequested,
    });
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
