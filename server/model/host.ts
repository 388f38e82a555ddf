// Which base model (and adapter) serves completions, and the one object the completion pipeline
// asks for it. Loading and decoding happen in the engine's worker thread, never on the server's
// main thread (ORT's run() blocks the event loop).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { LoadedAdapter } from '../../trainer/adapters/peft';
import { loraAdapterOf } from '../../trainer/adapters/peft';
import { adapterMessage as loraAdapterMessage } from '../../trainer/training/eval/evaluator';
import type { AdapterMessage } from '../../trainer/compute/engine/generation-handlers';
import type { ContinuationScore } from '../../trainer/compute/engine/generate';
import { stopTokenIds } from '../../trainer/compute/engine/generation-handlers';
import { loadModelConfig, type ModelConfig } from '../../trainer/model/config';
import type { ModelInfo } from '../protocol';
import { EngineWorker } from '../../trainer/compute/runtime/client';
import { Tokenizer } from '../../trainer/model/tokenizer/tokenizer';
import { type FimTemplate, completionSupport } from '../../trainer/model/tokenizer/fim';
import { ReviewScorer } from '../../trainer/modes/review/scorer';
import { type ServingPrecisionSetting, servingPrecision } from '../../trainer/model/precision';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Text stop sequences; the result is cut before the first match. */
  stop?: readonly string[];
  signal: AbortSignal;
  /** Called with each newly decoded piece of text. */
  onText?: (piece: string) => void;
  /** Stop decoding once the first line's log probability falls below this (a gate would hide it). */
  minFirstLineLogprob?: number;
}

/** A decoded completion and how sure the model was of it. */
export interface GeneratedText {
  text: string;
  /**
   * log probability (nats) of the completion's first line of code under the model: the sum over
   * the tokens up to the one that ends that line (all of them when none does).
   */
  firstLineLogprob: number;
}

/** Sum of `logprobs` over the tokens that make up `text`'s first non-blank line (and the newline ending it). */
export function firstLineLogprob(
  tokens: readonly number[],
  logprobs: readonly number[],
  decode: (ids: number[]) => string,
): number {
  let sum = 0;
  for (let i = 0; i < tokens.length; i++) {
    sum += logprobs[i] ?? 0;
    const text = decode(tokens.slice(0, i + 1));
    const newline = text.indexOf('\n', text.search(/\S/) >= 0 ? text.search(/\S/) : text.length);
    if (text.search(/\S/) >= 0 && newline >= 0) break;
  }
  return sum;
}

/** What serves on top of the base: nothing, a LoRA adapter (a feed), or a full fine-tune (other weights). */
export type ServingWeights =
  | { kind: 'base' }
  | { kind: 'lora'; id: string; adapter: LoadedAdapter }
  | { kind: 'full'; id: string; dir: string };

/** A base model (+ adapter) ready to decode. */
export interface LoadedModel {
  info: ModelInfo;
  /** Identity of the weights: changes with the base model or the adapter (cache key). */
  readonly modelKey: string;
  /** The base checkpoint's config and weights hash (what adapters are checked against). */
  config: ModelConfig;
  baseSha256: string;
  /** Id of the adapter (or full fine-tune) serving, null for the base alone. */
  readonly adapterId: string | null;
  tokenizer: Tokenizer;
  /** The family's FIM template; null when this checkpoint cannot complete code (completionProblem says why). */
  fim: FimTemplate | null;
  /** Why inline completion is refused (a chat/instruct checkpoint, no FIM tokens); review still scores. */
  completionProblem: string | null;
  /** Positions the model can attend to: the prompt plus the new tokens must fit. */
  contextLength: number;
  /** Decodes greedily from a FIM prompt until end of text, a stop token or maxNewTokens. */
  generate(prompt: Int32Array, options: GenerateOptions): Promise<GeneratedText>;
  /** How likely the serving weights find `continuation` (token ids) after `prompt`; no decode. */
  scoreContinuation(prompt: Int32Array, continuation: readonly number[]): Promise<ContinuationScore>;
  /** Switches what serves on top of the base, without reloading the base (LoRA is a feed). */
  setWeights(weights: ServingWeights): Promise<void>;
  /** What serves now: 'full' cannot score under the base too, so review skips it. */
  readonly weightsKind: ServingWeights['kind'];
  /**
   * A review scorer on the same worker and base model, scoring with the weights serving now.
   * Each of its worker calls queues behind (and before) generations, so a long review never
   * holds a completion for more than one scoring call. Never call its setAdapter.
   */
  reviewScorer(): ReviewScorer;
  dispose(): Promise<void>;
}

export type ModelLoadResult = { model: LoadedModel } | { model: null; reason: string };

export interface LoadModelOptions {
  /** Compute threads of the decoding session (default: smallModelThreads for a small model, else every core). */
  threads?: number;
  /** idiom.precision (default auto: int8 above ~100M parameters); LoRA stays a float32 feed on top. */
  precision?: ServingPrecisionSetting;
}

/**
 * Threads for a model of hidden size ≤ 512 (the embedded one is 256): one. Its decode gains
 * little from a second thread on a shared 2-core machine (`idiom bench lsp`, warm p50/p95 were
 * lower with one), and one thread leaves a core to the editor and to a training run.
 */
export const smallModelThreads = 1;

/** `text` cut before the first of `stops` (what the engine does when it decodes text itself). */
export function cutAtStop(text: string, stops: readonly string[]): string {
  let end = text.length;
  for (const stop of stops) {
    const at = stop === '' ? -1 : text.indexOf(stop);
    if (at >= 0 && at < end) end = at;
  }
  return text.slice(0, end);
}

/** The LoRA adapter as it crosses into the worker: plain records of tensors. */
export function adapterMessage(adapter: LoadedAdapter): AdapterMessage {
  return loraAdapterMessage(loraAdapterOf(adapter));
}

/**
 * Loads the model in `dir` into a fresh engine worker. The checkpoint is checked here first
 * (config.json, weights, tokenizer; its FIM template, fim.ts) so a bad path gives one clear line. The
 * decoding graph takes LoRA A/B as inputs, so an adapter switch is a different feed.
 */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<ModelLoadResult> {
  if (dir === '')
    return { model: null, reason: 'no base model is configured and none is bundled yet (set idiom.baseModelPath)' };
  if (!fs.existsSync(dir)) return { model: null, reason: `base model directory ${dir} does not exist` };
  const config = loadModelConfig(dir); // throws one clear line on a missing or malformed config.json
  const weights = ['model.safetensors', 'model.safetensors.index.json'].find((file) =>
    fs.existsSync(path.join(dir, file)),
  );
  if (!weights) return { model: null, reason: `${dir} has no model.safetensors` };
  if (!fs.existsSync(path.join(dir, 'tokenizer.json'))) return { model: null, reason: `${dir} has no tokenizer.json` };
  const tokenizer = await Tokenizer.load(dir);
  const support = completionSupport(dir, tokenizer);
  // A full fine-tune is loaded from its own folder (no tokenizer.json there): stop at the base's special tokens.
  const stopIds = stopTokenIds(tokenizer, config.eosTokenId);

  const worker = EngineWorker.start();
  const threads = options.threads ?? (config.hiddenSize <= 512 ? smallModelThreads : undefined);
  const precision = servingPrecision(options.precision ?? 'auto', config);
  const engineOptions = { loraInputs: true, precision, ...(threads ? { threads } : {}) };
  let base: { id: number; sha256: string };
  try {
    base = await worker.call('loadModel', dir, engineOptions);
  } catch (error) {
    await worker.terminate();
    throw error;
  }
  /** The engine model decoding now: the base (with or without a LoRA feed) or a full fine-tune. */
  let engineId = base.id;
  /** The engine decodes text (and so applies stop sequences) only for a model loaded with its tokenizer.json. */
  let engineHasTokenizer = true;
  let fullId: number | null = null;
  let adapterId: string | null = null;
  let weightsKind: ServingWeights['kind'] = 'base';
  let busy: Promise<unknown> = Promise.resolve();

  /** Runs `task` after the generation or switch before it (the worker's cancel flag is per model). */
  const serialized = <T>(task: () => Promise<T>): Promise<T> => {
    const previous = busy;
    const run = (async () => {
      await previous.catch(() => undefined);
      return task();
    })();
    busy = run;
    return run;
  };

  const model: LoadedModel = {
    info: { path: dir, name: path.basename(dir), precision },
    get modelKey() {
      return `${base.sha256}+${adapterId ?? 'base'}`;
    },
    config,
    baseSha256: base.sha256,
    get adapterId() {
      return adapterId;
    },
    tokenizer,
    fim: support.template,
    completionProblem: support.problem,
    contextLength: config.maxPositionEmbeddings,
    generate(prompt, options) {
      return serialized(async () => {
        if (options.signal.aborted) throw new Error('aborted');
        const id = engineId;
        const onAbort = () => void worker.call('cancelGeneration', id).catch(() => undefined);
        options.signal.addEventListener('abort', onAbort, { once: true });
        try {
          const stop = engineHasTokenizer ? options.stop : undefined;
          const result = await worker.call('generate', id, {
            prompt: Array.from(prompt),
            maxTokens: options.maxNewTokens,
            eosTokenIds: stopIds,
            stop,
            ...(options.minFirstLineLogprob !== undefined ? { minFirstLineLogprob: options.minFirstLineLogprob } : {}),
          });
          if (options.signal.aborted || result.stopReason === 'cancelled') throw new Error('aborted');
          const text = result.text ?? cutAtStop(tokenizer.decode(result.tokens), options.stop ?? []);
          options.onText?.(text);
          return {
            text,
            firstLineLogprob: firstLineLogprob(result.tokens, result.logprobs, (ids) => tokenizer.decode(ids)),
          };
        } finally {
          options.signal.removeEventListener('abort', onAbort);
        }
      });
    },
    scoreContinuation(prompt, continuation) {
      return serialized(() => worker.call('scoreContinuation', engineId, Array.from(prompt), [...continuation]));
    },
    setWeights(weights) {
      return serialized(async () => {
        if (weights.kind === 'full') {
          const loaded = await worker.call('loadModel', weights.dir, { precision, ...(threads ? { threads } : {}) });
          if (fullId !== null) await worker.call('disposeModel', fullId).catch(() => undefined);
          fullId = loaded.id;
          engineId = loaded.id;
          engineHasTokenizer = loaded.hasTokenizer;
          adapterId = weights.id;
          weightsKind = 'full';
          return;
        }
        await worker.call('setAdapter', base.id, weights.kind === 'lora' ? adapterMessage(weights.adapter) : null);
        if (fullId !== null) await worker.call('disposeModel', fullId).catch(() => undefined);
        fullId = null;
        engineId = base.id;
        engineHasTokenizer = true;
        adapterId = weights.kind === 'lora' ? weights.id : null;
        weightsKind = weights.kind;
      });
    },
    get weightsKind() {
      return weightsKind;
    },
    reviewScorer() {
      // Only `call` is used by the scorer; routing it through the queue interleaves review with completions.
      const queued = {
        call: (method: string, ...args: unknown[]) =>
          serialized(() => (worker.call as (m: string, ...a: unknown[]) => Promise<unknown>)(method, ...args)),
      };
      return ReviewScorer.attach(queued as unknown as EngineWorker, base.id, tokenizer, config.maxPositionEmbeddings, {
        hasAdapter: weightsKind === 'lora',
      });
    },
    async dispose() {
      await worker.terminate();
    },
  };
  return { model };
}
