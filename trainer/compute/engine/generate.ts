import type { KvCacheSession } from './inference';
import { Sampler, type SamplingOptions } from './sampling';

// The generation loop. It runs where the session lives (inside the engine worker), so no message
// crosses threads per token; between tokens it awaits ORT, so a cancel message can be handled.

export interface GenerateOptions {
  maxTokens: number;
  sampling?: SamplingOptions;
  /** Generation ends at any of these ids (end of text, FIM markers, …); the id is not part of the result. */
  eosTokenIds?: readonly number[];
  /**
   * Only ids below this are ever chosen: the tokenizer's vocabulary. Models pad theirs (Qwen2.5:
   * 151,936 rows for 151,665 tokens), and a padded id has no text. Default: every logit.
   */
  vocabSize?: number;
  /** Text stop sequences; needs `decode`. The text is cut before the first match. */
  stop?: readonly string[];
  decode?: (ids: readonly number[]) => string;
  /** Polled before each step; true ends generation with stopReason 'cancelled'. */
  cancelled?: () => boolean;
  /**
   * Generation ends with stopReason 'unlikely' once the log probability of the first line so far
   * falls below this: a line's probability only falls as it grows, so a suggestion a confidence
   * gate would hide stops costing decode steps at once. Needs `decode` to see where the line ends.
   */
  minFirstLineLogprob?: number;
}

export type StopReason = 'eos' | 'stop' | 'length' | 'cancelled' | 'context' | 'unlikely';

export interface GenerateResult {
  tokens: number[];
  /** Natural-log probability of each of `tokens` under the logits it was chosen from. */
  logprobs: number[];
  /** Decoded text (cut at a stop sequence) when `decode` was given. */
  text?: string;
  stopReason: StopReason;
  promptTokens: number;
  /** Prompt tokens whose keys/values were already cached (KV-prefix reuse). */
  reusedTokens: number;
  prefillMs: number;
  decodeMs: number;
}

/**
 * Holds a KvCacheSession and the tokens its cache holds, so a prompt that shares a prefix with the
 * previous one (the next keystroke) only runs its new tail.
 */
export class Generator {
  private cachedTokens: number[] = [];

  constructor(readonly session: KvCacheSession) {}

  /** Forgets the cache (e.g. after switching adapters, whose keys/values differ). */
  reset(): void {
    this.cachedTokens = [];
    this.session.truncate(0);
  }

  /** Runs `prompt` after the longest prefix the cache already holds, always at least its last token. */
  private async runPrompt(prompt: readonly number[]): Promise<{ logits: Float32Array; reused: number }> {
    let reused = 0;
    const limit = Math.min(this.cachedTokens.length, prompt.length - 1);
    while (reused < limit && this.cachedTokens[reused] === prompt[reused]) reused++;
    this.session.truncate(reused);
    this.cachedTokens.length = reused;
    const logits = await this.session.append(prompt.slice(reused));
    this.cachedTokens.push(...prompt.slice(reused));
    return { logits, reused };
  }

  /**
   * Scores `continuation` after `prompt` without generating: the prompt runs once (reusing the
   * cached prefix, as generate does), then one step per continuation token. The prompt stays
   * cached, so a generation from the same prompt afterwards does not run it again.
   */
  async scoreContinuation(
    prompt: readonly number[],
    continuation: readonly number[],
    vocabSize?: number,
  ): Promise<ContinuationScore> {
    if (prompt.length === 0) throw new Error('scoreContinuation needs a non-empty prompt');
    if (continuation.length === 0) throw new Error('scoreContinuation needs a non-empty continuation');
    if (prompt.length + continuation.length - 1 > this.session.maxContext)
      throw new Error(
        `a prompt of ${prompt.length} and a continuation of ${continuation.length} tokens exceed the model's limit of ${this.session.maxContext}`,
      );
    let { logits } = await this.runPrompt(prompt);
    const choosable = (all: Float32Array) =>
      vocabSize !== undefined && vocabSize < all.length ? all.subarray(0, vocabSize) : all;
    const first = choosable(logits);
    let best = 0;
    for (let i = 1; i < first.length; i++) if (first[i] > first[best]) best = i;
    const greedyFirstLogprob = logSoftmaxAt(first, best);
    const logprobs: number[] = [];
    for (const [i, token] of continuation.entries()) {
      if (i > 0) {
        logits = await this.session.append([continuation[i - 1]]);
        this.cachedTokens.push(continuation[i - 1]);
      }
      const row = choosable(logits);
      logprobs.push(token < row.length ? logSoftmaxAt(row, token) : -Infinity);
    }
    return { logprobs, greedyFirstLogprob };
  }

  async generate(prompt: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
    if (prompt.length === 0) throw new Error('generate needs a non-empty prompt');
    if (!(Number.isInteger(options.maxTokens) && options.maxTokens >= 0)) {
      throw new Error(`maxTokens must be a non-negative integer, got ${options.maxTokens}`);
    }
    if (options.stop?.length && !options.decode) throw new Error('stop sequences need a decode function');
    const sampler = new Sampler(options.sampling);
    const eos = new Set(options.eosTokenIds ?? []);
    const vocabSize = options.vocabSize;
    if (vocabSize !== undefined && !(Number.isInteger(vocabSize) && vocabSize > 0)) {
      throw new Error(`vocabSize must be a positive integer, got ${vocabSize}`);
    }

    const prefillStart = performance.now();
    const prefilled = await this.runPrompt(prompt);
    let logits = prefilled.logits;
    const reused = prefilled.reused;
    const prefillMs = performance.now() - prefillStart;

    const decodeStart = performance.now();
    const tokens: number[] = [];
    const logprobs: number[] = [];
    let firstLine = 0;
    let firstLineDone = false;
    let text: string | undefined;
    let stopReason: StopReason = 'length';
    while (tokens.length < options.maxTokens) {
      if (options.cancelled?.()) {
        stopReason = 'cancelled';
        break;
      }
      const choosable = vocabSize !== undefined && vocabSize < logits.length ? logits.subarray(0, vocabSize) : logits;
      const next = sampler.next(choosable);
      if (eos.has(next)) {
        stopReason = 'eos';
        break;
      }
      tokens.push(next);
      const logprob = logSoftmaxAt(choosable, next);
      logprobs.push(logprob);
      const watchingLine = options.minFirstLineLogprob !== undefined && !firstLineDone;
      // One decode per step serves both the line watch and the stop sequences.
      const decoded = options.decode && (watchingLine || options.stop?.length) ? options.decode(tokens) : undefined;
      if (watchingLine && decoded !== undefined) {
        firstLine += logprob;
        if (firstLine < options.minFirstLineLogprob!) {
          stopReason = 'unlikely';
          break;
        }
        firstLineDone = /\S[^\n]*\n/.test(decoded);
      }
      if (options.stop?.length) {
        text = decoded!;
        const cut = firstStop(text, options.stop);
        if (cut >= 0) {
          text = text.slice(0, cut);
          stopReason = 'stop';
          break;
        }
      }
      if (tokens.length === options.maxTokens) break;
      if (this.session.length >= this.session.maxContext) {
        stopReason = 'context';
        break;
      }
      logits = await this.session.append([next]);
      this.cachedTokens.push(next);
    }
    if (options.decode && text === undefined) text = options.decode(tokens);
    return {
      tokens,
      logprobs,
      text,
      stopReason,
      promptTokens: prompt.length,
      reusedTokens: reused,
      prefillMs,
      decodeMs: performance.now() - decodeStart,
    };
  }
}

/** How likely a model finds a given continuation of a prompt (scoreContinuation). */
export interface ContinuationScore {
  /** Natural-log probability of each continuation token given the prompt and the tokens before it. */
  logprobs: number[];
  /** The log probability of the token greedy decoding would choose first (the best first token). */
  greedyFirstLogprob: number;
}

/** log softmax(logits)[index], computed stably. */
export function logSoftmaxAt(logits: ArrayLike<number>, index: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return logits[index] - max - Math.log(sum);
}

function firstStop(text: string, stops: readonly string[]): number {
  let first = -1;
  for (const stop of stops) {
    if (stop.length === 0) continue;
    const at = text.indexOf(stop);
    if (at >= 0 && (first < 0 || at < first)) first = at;
  }
  return first;
}
