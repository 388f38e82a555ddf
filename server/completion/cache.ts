// Raw model outputs by prompt, so the same cursor context (undo, re-trigger, moving back) costs
// no decode. Raw, not post-processed: the stop rules depend on the document around the cursor.
import { LRUCache } from 'lru-cache';

export interface CompletionCacheKey {
  /** Identity of the weights that produced the text: base model + adapter. */
  modelKey: string;
  prefix: string;
  suffix: string;
}

/** How much of the context around the cursor decides a completion (beyond that, prompts are cut anyway). */
const prefixChars = 4000;
const suffixChars = 1000;

export class CompletionCache<V extends object | string = string> {
  private readonly entries: LRUCache<string, V>;

  /** Tabby's defaults: 100 entries, 5 minutes. */
  constructor(maxEntries = 100, ttlMs = 5 * 60_000) {
    this.entries = new LRUCache<string, V>({ max: maxEntries, ttl: ttlMs });
  }

  private static keyOf(key: CompletionCacheKey): string {
    return `${key.modelKey}\u0000${key.prefix.slice(-prefixChars)}\u0000${key.suffix.slice(0, suffixChars)}`;
  }

  get(key: CompletionCacheKey): V | undefined {
    return this.entries.get(CompletionCache.keyOf(key));
  }

  set(key: CompletionCacheKey, rawCompletion: V): void {
    this.entries.set(CompletionCache.keyOf(key), rawCompletion);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
