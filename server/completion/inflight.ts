// The generation in flight (or just finished), reused while the user types what it is producing:
// typing "ret" while the model decodes "return x;" should show "urn x;", not start a new decode.
// Every edit that departs from it aborts it, so the worker never decodes for stale text.

export interface GenerationContext {
  uri: string;
  modelKey: string;
  prefix: string;
  suffix: string;
}

export class Generation {
  /** Raw text decoded so far. */
  text = '';
  done = false;
  readonly result: Promise<string>;
  readonly abortController = new AbortController();
  private subscribers = 0;
  private graceTimer: NodeJS.Timeout | undefined;
  private settle!: { resolve: (text: string) => void; reject: (error: unknown) => void };

  constructor(readonly context: GenerationContext) {
    this.result = new Promise<string>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A generation nobody awaits may still reject (aborted); that is not an unhandled error.
    this.result.catch(() => undefined);
  }

  get aborted(): boolean {
    return this.abortController.signal.aborted;
  }

  append(piece: string): void {
    this.text += piece;
  }

  finish(text: string): void {
    this.text = text;
    this.done = true;
    clearTimeout(this.graceTimer);
    this.settle.resolve(text);
  }

  fail(error: unknown): void {
    this.done = true;
    clearTimeout(this.graceTimer);
    this.settle.reject(error);
  }

  abort(reason = 'superseded'): void {
    if (this.done || this.aborted) return;
    this.abortController.abort(new Error(reason));
    this.fail(new Error(reason));
  }

  /** A request starts waiting on this generation. */
  subscribe(): void {
    this.subscribers++;
    clearTimeout(this.graceTimer);
  }

  /**
   * A request stops waiting (answered or cancelled). With nobody left, the decode goes on for
   * `graceMs` in case the next keystroke's request can reuse it, then stops.
   */
  unsubscribe(graceMs: number): void {
    this.subscribers = Math.max(0, this.subscribers - 1);
    if (this.subscribers > 0 || this.done) return;
    clearTimeout(this.graceTimer);
    this.graceTimer = setTimeout(() => this.abort('no request is waiting for this completion'), graceMs);
    this.graceTimer.unref?.();
  }
}

/** How `context` continues the generation: the text typed since it started, if consistent so far. */
export function typedSince(generation: Generation, context: GenerationContext): string | null {
  const started = generation.context;
  if (
    generation.aborted ||
    context.uri !== started.uri ||
    context.modelKey !== started.modelKey ||
    context.suffix !== started.suffix
  )
    return null;
  if (!context.prefix.startsWith(started.prefix)) return null;
  const typed = context.prefix.slice(started.prefix.length);
  if (generation.text.startsWith(typed)) return typed;
  // Typed past what is decoded so far: still possible while decoding goes on.
  if (!generation.done && typed.startsWith(generation.text)) return typed;
  return null;
}

export class InflightGenerations {
  private latest: Generation | null = null;

  /** Starts tracking a new generation; the previous one is aborted unless it already finished. */
  start(context: GenerationContext): Generation {
    this.latest?.abort();
    const generation = new Generation(context);
    this.latest = generation;
    return generation;
  }

  /** The tracked generation and the typed text, when `context` continues it. */
  find(context: GenerationContext): { generation: Generation; typed: string } | null {
    if (!this.latest) return null;
    const typed = typedSince(this.latest, context);
    return typed === null ? null : { generation: this.latest, typed };
  }

  /**
   * Called on every edit with the document's new text: aborts the running generation unless the
   * text still reads as its prefix + something it is producing + its suffix.
   */
  onEdit(uri: string, text: string): void {
    const generation = this.latest;
    if (!generation || generation.done || generation.context.uri !== uri) return;
    const { prefix, suffix } = generation.context;
    const continues =
      text.length >= prefix.length + suffix.length &&
      text.startsWith(prefix) &&
      text.endsWith(suffix) &&
      typedSince(generation, { ...generation.context, prefix: text.slice(0, text.length - suffix.length) }) !== null;
    if (!continues) generation.abort('the document changed');
  }

  abortAll(reason: string): void {
    this.latest?.abort(reason);
    this.latest = null;
  }
}

/** The rest of a reusable generation's final text once `typed` is taken off, or null if it went elsewhere. */
export async function remainderAfter(generation: Generation, typed: string): Promise<string | null> {
  const text = await generation.result;
  return text.startsWith(typed) ? text.slice(typed.length) : null;
}
