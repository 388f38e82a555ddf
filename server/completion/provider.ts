// The inline completion pipeline: cursor context -> cache -> in-flight reuse -> recall from the
// document and the repository memory -> FIM prompt -> decode in the engine worker (or on the
// completion endpoint, endpoint.ts) -> confidence gate -> post-processing -> credential filter.
// Knows nothing about LSP; server.ts adapts it.

import type { RepositoryMemory } from '../../trainer/data/memory/memory';
import { countParameters } from '../../trainer/model/config';
import { AUTO_INT8_PARAMETERS } from '../../trainer/model/precision';
import { DEFAULT_MAX_NEW_TOKENS } from '../protocol';
import { cutAtStop, type GeneratedText, type LoadedModel } from '../model/host';
import { CompletionCache } from './cache';
import { credentialAddedBy } from './credentials';
import type { EndpointClient } from './endpoint';
import { InflightGenerations, remainderAfter, type Generation, type GenerationContext } from './inflight';
import { postprocessCompletion, stopSequencesFor } from './postprocess';
import {
  buildFimPrompt,
  defaultPromptBudget,
  MAX_CHARS_PER_TOKEN,
  promptTokensFor,
  type ContextSnippet,
  type FimPrompt,
  type PromptBudget,
  type PromptOrder,
} from './prompt';
import { defaultRecallOptions, recall, type RecallOptions } from './recall';
import { continuedPrompt, type TypingAnchor } from './typing';
import {
  defaultRecallCheck,
  passesRecallCheck,
  recallCheckActive,
  scoreRecalledLine,
  type RecallCheck,
} from './recall-check';

export interface CompletionDocument {
  uri: string;
  languageId: string;
  text: string;
  /** Cursor offset in `text`. */
  offset: number;
}

/** What the pipeline needs to know about a request's cancellation (LSP's CancellationToken fits). */
export interface Cancellation {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): { dispose(): void };
}

export interface CompletionOptions {
  maxNewTokens: number;
  maxLines: number;
  /** How long a generation nobody waits for keeps decoding, for the next keystroke to reuse. */
  reuseGraceMs: number;
  /**
   * The model's suggestion is shown only when its first line is at least this probable under the
   * model (0 shows everything): a wrong ghost text costs attention, an empty one nothing.
   */
  minConfidence: number;
  recall: RecallOptions | null;
  /** A recalled line the model finds less likely than this is hidden (recall-check.ts). */
  recallCheck: RecallCheck;
  /** How the model is asked: fill in the middle, or continue the text before the cursor. */
  promptOrder: PromptOrder;
}

export const defaultCompletionOptions: CompletionOptions = {
  maxNewTokens: DEFAULT_MAX_NEW_TOKENS,
  maxLines: 8,
  reuseGraceMs: 400,
  minConfidence: 0.2,
  recall: defaultRecallOptions,
  recallCheck: defaultRecallCheck,
  promptOrder: 'psm',
};

/**
 * Prompt tokens for a model that attends to `contextLength` positions: at most half of them, the
 * sequence length adapters are trained on (trainer/training/pipeline/plan.ts), and at most the
 * budget for a model of `parameters` parameters (prompt.ts); the new tokens always fit after it.
 */
export function promptTokenBudget(contextLength: number, maxNewTokens: number, parameters = 0): number {
  return Math.min(
    promptTokensFor(parameters),
    Math.max(64, Math.floor(contextLength / 2)),
    contextLength - maxNewTokens,
  );
}

/**
 * The prompt budget the server uses for a model: promptTokenBudget's tokens, and a share for the
 * file's first lines only past the int8 threshold, where their KV reuse saves a costly prefill;
 * the embedded model's few tokens all go to the text around the cursor.
 */
export function servingPromptBudget(contextLength: number, maxNewTokens: number, parameters: number): PromptBudget {
  return {
    ...defaultPromptBudget,
    maxTokens: promptTokenBudget(contextLength, maxNewTokens, parameters),
    anchorShare: parameters > AUTO_INT8_PARAMETERS ? defaultPromptBudget.anchorShare : 0,
  };
}

export type CompletionSource = 'cache' | 'reused' | 'model' | 'recall';

/**
 * Characters on each side of the cursor that any step of a request reads: what can reach the
 * prompt, and recall's document window. A 20 MB minified line costs what a small file does.
 */
export const REQUEST_WINDOW_CHARS = Math.max(
  defaultPromptBudget.maxTokens * MAX_CHARS_PER_TOKEN,
  defaultRecallOptions.documentWindowChars,
);

export interface CompletionAnswer {
  text: string;
  source: CompletionSource;
}

export class CompletionProvider {
  readonly cache = new CompletionCache<GeneratedText>();
  readonly inflight = new InflightGenerations();
  /** The fill-in-the-middle prompt the current run of typing started from (typing.ts). */
  private typingAnchor: TypingAnchor | null = null;

  constructor(
    private readonly currentModel: () => LoadedModel | null,
    private readonly snippetsFor: (document: CompletionDocument) => ContextSnippet[],
    private readonly log: { error(line: string): void; warn(line: string): void },
    private readonly options: () => CompletionOptions = () => defaultCompletionOptions,
    /** The serving adapter's repository memory, if it has one. */
    private readonly memory: () => RepositoryMemory | null = () => null,
    /** A model server that generates instead of the local engine, when one is configured. */
    private readonly endpoint: () => EndpointClient | null = () => null,
  ) {}

  /** Called on every edit, so decoding for text that no longer exists stops at once. */
  documentChanged(uri: string, text: string): void {
    this.inflight.onEdit(uri, text);
  }

  /** Drops what older weights produced (adapter switch, model reload). */
  modelChanged(): void {
    this.inflight.abortAll('the model changed');
    this.cache.clear();
    this.typingAnchor = null;
  }

  /** The completion to show at the cursor, or null (no model, cancelled, nothing useful). */
  async complete(document: CompletionDocument, cancellation: Cancellation): Promise<CompletionAnswer | null> {
    const model = this.currentModel();
    // A chat checkpoint or one without FIM tokens serves review only (model.completionProblem).
    if (!model?.fim || cancellation.isCancellationRequested) return null;
    const options = this.options();
    // The whole prefix and suffix identify the context (reuse while typing compares them); every
    // other step reads only the window around the cursor.
    const context: GenerationContext = {
      uri: document.uri,
      modelKey: model.modelKey,
      prefix: document.text.slice(0, document.offset),
      suffix: document.text.slice(document.offset),
    };
    const prefix = document.text.slice(Math.max(0, document.offset - REQUEST_WINDOW_CHARS), document.offset);
    const suffix = document.text.slice(document.offset, document.offset + REQUEST_WINDOW_CHARS);
    const finish = (
      raw: string,
      source: CompletionSource,
      firstLineLogprob: number | null,
    ): CompletionAnswer | null => {
      if (firstLineLogprob !== null && Math.exp(firstLineLogprob) < options.minConfidence) return null;
      const text = postprocessCompletion({ prefix, suffix, completion: raw, maxLines: options.maxLines });
      if (text === '') return null;
      const credential = credentialAddedBy(prefix, text, suffix);
      if (credential) {
        // The kind only: the log must not carry what it withholds.
        this.log.warn(`a suggestion that looked like a credential (${credential}) was withheld`);
        return null;
      }
      return { text, source };
    };

    const cached = this.cache.get(context);
    if (cached !== undefined) return finish(cached.text, 'cache', cached.firstLineLogprob);

    const running = this.inflight.find(context);
    if (running) {
      // The user is typing what the model decoded: its rest passes the gate the whole did.
      const rest = await this.await(running.generation, cancellation, () =>
        remainderAfter(running.generation, running.typed),
      );
      if (rest !== undefined && rest !== null)
        return finish(rest, 'reused', this.cache.get(running.generation.context)?.firstLineLogprob ?? null);
      if (cancellation.isCancellationRequested) return null;
    }

    const fim = model.fim;
    const budget = servingPromptBudget(model.contextLength, options.maxNewTokens, countParameters(model.config));
    const buildPrompt = (): FimPrompt => {
      // A model server gets the prompt's texts, not its tokens: it always gets a fresh layout.
      const continuing = options.promptOrder === 'psm' && !this.endpoint()?.active;
      const continued = continuing
        ? continuedPrompt(this.typingAnchor, context, model.tokenizer, budget.maxTokens)
        : null;
      if (continued) return continued;
      const fresh = buildFimPrompt(
        {
          prefix,
          suffix,
          languageId: document.languageId,
          snippets: this.snippetsFor({ ...document, text: prefix + suffix, offset: prefix.length }),
        },
        model.tokenizer,
        fim,
        budget,
        options.promptOrder,
      );
      this.typingAnchor = continuing ? { ...context, prompt: fresh } : null;
      return fresh;
    };
    let prompt: FimPrompt | undefined;
    if (options.recall) {
      const recalled = recall(prefix, suffix, document.uri, this.memory(), options.recall);
      const answer = recalled ? finish(recalled.text, 'recall', null) : null;
      // A model server decodes elsewhere: the local model is not the one to judge its recall. The
      // base alone has not learnt the repository and scores its right lines too low to judge them.
      const judge = recallCheckActive(options.recallCheck) && model.adapterId !== null && !this.endpoint()?.active;
      if (answer && !judge) return answer;
      if (answer) {
        prompt = buildPrompt();
        if (await this.recalledLineLikely(model, prompt.tokens, answer.text, options.recallCheck)) return answer;
        if (cancellation.isCancellationRequested) return null;
      }
    }
    prompt ??= buildPrompt();

    const generation = this.inflight.start(context);
    const stop = stopSequencesFor(prefix, suffix);
    const signal = generation.abortController.signal;
    const local = () =>
      model.generate(prompt.tokens, {
        maxNewTokens: options.maxNewTokens,
        stop,
        signal,
        onText: (piece) => generation.append(piece),
        ...(options.minConfidence > 0 ? { minFirstLineLogprob: Math.log(options.minConfidence) } : {}),
      });
    const endpoint = this.endpoint();
    const generated = endpoint?.active
      ? endpoint
          .generate({
            prompt: model.tokenizer.decode(Array.from(prompt.tokens)),
            prefixText: prompt.prefixText,
            suffixText: prompt.suffixText,
            contextText: prompt.contextText,
            maxNewTokens: options.maxNewTokens,
            stop,
            signal,
          })
          .then(
            (remote) => {
              // Servers honour a few stop sequences at most: cut as the local decode does.
              const cut = { ...remote, text: cutAtStop(remote.text, stop) };
              generation.append(cut.text);
              return cut;
            },
            (error) => {
              if (signal.aborted) throw error;
              // Down: the status bar says so, and the local model answers this request.
              this.log.warn(error instanceof Error ? error.message : String(error));
              return local();
            },
          )
      : local();
    generated.then(
      (generated) => {
        if (generation.aborted) return;
        // Cached first: the waiting request reads the confidence from the cache.
        this.cache.set(context, generated);
        generation.finish(generated.text);
      },
      (error) => {
        if (!generation.aborted)
          this.log.error(`completion failed: ${error instanceof Error ? error.message : String(error)}`);
        generation.fail(error);
      },
    );
    const raw = await this.await(generation, cancellation, () => generation.result);
    if (raw === undefined) return null;
    return finish(raw, 'model', this.cache.get(context)?.firstLineLogprob ?? null);
  }

  /** Whether the serving model finds a recalled line likely enough to show; a failed check shows it. */
  private async recalledLineLikely(
    model: LoadedModel,
    prompt: Int32Array,
    text: string,
    check: RecallCheck,
  ): Promise<boolean> {
    try {
      return passesRecallCheck(await scoreRecalledLine(model, prompt, text), check);
    } catch (error) {
      this.log.error(`recall check failed: ${error instanceof Error ? error.message : String(error)}`);
      return true;
    }
  }

  /**
   * Waits for `value` while the request is live. A cancelled request stops waiting at once; the
   * generation itself runs on for a grace period in case the next keystroke can reuse it.
   * Resolves undefined when cancelled or when the generation was aborted or failed.
   */
  private async await<T>(
    generation: Generation,
    cancellation: Cancellation,
    value: () => Promise<T>,
  ): Promise<T | undefined> {
    generation.subscribe();
    let listener: { dispose(): void } | undefined;
    const cancelled = new Promise<undefined>((resolve) => {
      listener = cancellation.onCancellationRequested(() => resolve(undefined));
    });
    try {
      return await Promise.race([value(), cancelled]);
    } catch {
      return undefined;
    } finally {
      listener?.dispose();
      generation.unsubscribe(this.options().reuseGraceMs);
    }
  }
}
