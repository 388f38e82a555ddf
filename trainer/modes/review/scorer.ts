// Line surprisal of a file under the repository adapter and under the base model, and the
// adapter's greedy alternative for a line, through a model in the engine worker. It uses the
// worker's generation handlers (loadModel with LoRA inputs, setAdapter, score, generate), so the
// language server can review with the model it already serves completions from (attach()).

import type { AdapterMessage } from '../../compute/engine/generation-handlers';
import type { LoraAdapter } from '../../compute/engine/weights';
import { adapterMessage } from '../../training/eval/evaluator';
import type { EngineWorker } from '../../compute/runtime/client';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import {
  BITS_PER_NAT,
  aggregateLines,
  contentLines,
  pickTokenNll,
  scoringWindows,
  splitLines,
  tokenLines,
  type LineScores,
} from './lines';

/** Tokens per scoring window (attention cost grows with its square); longer files use overlapping windows. */
export const DEFAULT_WINDOW_TOKENS = 512;

export interface FileSurprisal {
  lines: string[];
  /** Under the adapter (or the base, when none is set). */
  adapter: LineScores;
  /** Under the base model; null when not asked for. */
  base: LineScores | null;
  tokens: number;
}

export interface ReviewScorerOptions {
  /** Window length in tokens (≤ the model's context). Default min(512, context). */
  windowTokens?: number;
}

export class ReviewScorer {
  private hasAdapter = false;

  private constructor(
    private readonly worker: EngineWorker,
    readonly modelId: number,
    readonly tokenizer: Tokenizer,
    /** The model's context (max_position_embeddings, or the session's maxContext). */
    readonly maxContext: number,
    private readonly windowTokens: number,
    private readonly owned: boolean,
  ) {}

  /** Loads `baseDir` in `worker` with LoRA inputs (adapters switch by feed; the base scores with zero feeds). */
  static async load(
    worker: EngineWorker,
    baseDir: string,
    tokenizer: Tokenizer,
    options: ReviewScorerOptions & { threads?: number } = {},
  ): Promise<ReviewScorer> {
    const loaded = await worker.call('loadModel', baseDir, { loraInputs: true, threads: options.threads });
    const context = loaded.config.maxPositionEmbeddings;
    return new ReviewScorer(
      worker,
      loaded.id,
      tokenizer,
      context,
      Math.min(options.windowTokens ?? DEFAULT_WINDOW_TOKENS, context),
      true,
    );
  }

  /**
   * Uses a model the caller already loaded in `worker` with `loraInputs: true` (the language
   * server's). dispose() then leaves it loaded. The caller sets its adapter (or calls setAdapter).
   */
  static attach(
    worker: EngineWorker,
    modelId: number,
    tokenizer: Tokenizer,
    maxContext: number,
    options: ReviewScorerOptions & { hasAdapter?: boolean } = {},
  ): ReviewScorer {
    const scorer = new ReviewScorer(
      worker,
      modelId,
      tokenizer,
      maxContext,
      Math.min(options.windowTokens ?? DEFAULT_WINDOW_TOKENS, maxContext),
      false,
    );
    scorer.hasAdapter = options.hasAdapter ?? true;
    return scorer;
  }

  /** The adapter to score and generate with; null = the base model alone. */
  async setAdapter(adapter: LoraAdapter | AdapterMessage | null): Promise<void> {
    const message =
      adapter === null
        ? null
        : adapter.modules instanceof Map
          ? adapterMessage(adapter as LoraAdapter)
          : (adapter as AdapterMessage);
    await this.worker.call('setAdapter', this.modelId, message);
    this.hasAdapter = adapter !== null;
  }

  /** Token ids of `text` after the start token (end of text, as between files in training rows). */
  private encode(text: string): { ids: number[]; start: number } {
    const ids = text.length === 0 ? [] : this.tokenizer.encode(text, { specialsAsText: true });
    const start = this.tokenizer.eos ?? this.tokenizer.fileSeparator;
    return start === null ? { ids, start: 0 } : { ids: [start, ...ids], start: 1 };
  }

  /** Per-token surprisal (bits) of each token of `text` (NaN where a token has no context). */
  async tokenSurprisal(text: string, options: { base?: boolean } = {}): Promise<{ ids: number[]; bits: Float64Array }> {
    const { ids: all, start } = this.encode(text);
    const bits = new Float64Array(all.length - start).fill(NaN);
    if (all.length < 2) return { ids: all.slice(start), bits };
    const { starts, length } = scoringWindows(all.length, this.windowTokens);
    const windows = starts.map((s) => all.slice(s, s + length));
    const nll = await this.worker.call('score', this.modelId, windows, { base: options.base ?? false });
    const perToken = pickTokenNll(nll, starts, length, all.length);
    for (let i = start; i < all.length; i++) bits[i - start] = perToken[i] * BITS_PER_NAT;
    return { ids: all.slice(start), bits };
  }

  /** Line surprisal of `text` under the adapter and (with `base`) under the base model. */
  async fileSurprisal(text: string, options: { base?: boolean } = {}): Promise<FileSurprisal> {
    const lines = splitLines(text);
    const hasContent = contentLines(lines);
    const adapterScores = await this.tokenSurprisal(text);
    const lineOfToken = tokenLines(
      text,
      adapterScores.ids.map((id) => this.tokenizer.tokenBytes(id).length),
    );
    const adapter = aggregateLines(lineOfToken, adapterScores.bits, lines.length, hasContent);
    let base: LineScores | null = null;
    if (options.base) {
      base = this.hasAdapter
        ? aggregateLines(lineOfToken, (await this.tokenSurprisal(text, { base: true })).bits, lines.length, hasContent)
        : adapter;
    }
    return { lines, adapter, base, tokens: adapterScores.ids.length };
  }

  /**
   * What this codebase would write on line `line` (1-based) instead: the adapter's greedy
   * continuation of the file up to the start of that line, up to the first newline.
   */
  async alternative(text: string, line: number, options: { maxTokens?: number } = {}): Promise<string> {
    const lines = splitLines(text);
    if (!(Number.isInteger(line) && line >= 1 && line <= lines.length))
      throw new Error(`line ${line} is outside the file (1..${lines.length})`);
    const prefix = lines
      .slice(0, line - 1)
      .map((l) => `${l}\n`)
      .join('');
    const maxTokens = options.maxTokens ?? 64;
    const { ids } = this.encode(prefix);
    const room = this.maxContext - maxTokens;
    if (room < 2)
      throw new Error(`a context of ${this.maxContext} tokens leaves no room for a ${maxTokens}-token line`);
    const prompt = ids.length > room ? ids.slice(ids.length - room) : ids;
    const result = await this.worker.call('generate', this.modelId, { prompt, maxTokens, stop: ['\n'] });
    const generated = result.text ?? this.tokenizer.decode(result.tokens);
    const newline = generated.indexOf('\n');
    return newline >= 0 ? generated.slice(0, newline) : generated;
  }

  /** Releases the model when this scorer loaded it. */
  async dispose(): Promise<void> {
    if (this.owned) await this.worker.call('disposeModel', this.modelId);
  }
}
