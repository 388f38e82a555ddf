// Byte-level BPE training, written here because @huggingface/tokenizers (JS) cannot train.
// Produces a GPT-2 / Qwen2-style tokenizer.json: regex Split, then ByteLevel bytes -> characters,
// a BPE model (vocab + merges), and the special tokens as added tokens.
//
// Algorithm: count unique pre-tokens once, then merge the most frequent adjacent pair repeatedly,
// updating pair counts incrementally (only the words that hold the merged pair are touched,
// found through a pair -> words index) with a lazy max-heap of pair counts.

import { SplitPreTokenizer } from '@huggingface/tokenizers';
import { BYTE_TO_CHAR } from './byte-level';

/** Qwen2's pre-tokenizer pattern: words with one leading non-letter, single digits, punctuation runs with their newlines, whitespace. */
export const PRETOKENIZE_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const DEFAULT_SPECIAL_TOKENS: readonly string[] = [
  '<|endoftext|>',
  '<|fim_prefix|>',
  '<|fim_middle|>',
  '<|fim_suffix|>',
  '<|file_sep|>',
];

export interface BpeTrainerOptions {
  /** Total ids: special tokens + 256 bytes + merged tokens. Training stops early when no pair reaches minFrequency. */
  vocabSize: number;
  /** Added as special tokens with the first ids, in this order. Default DEFAULT_SPECIAL_TOKENS. */
  specialTokens?: readonly string[];
  /** A pair must occur this often to be merged. Default 2. */
  minFrequency?: number;
}

export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

export interface TokenizerJson {
  version: string;
  truncation: null;
  padding: null;
  added_tokens: AddedTokenJson[];
  normalizer: null;
  pre_tokenizer: Record<string, unknown>;
  post_processor: Record<string, unknown>;
  decoder: Record<string, unknown>;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: string[];
  };
}

export interface BpeTrainingStats {
  inputBytes: number;
  uniqueWords: number;
  merges: number;
  vocabSize: number;
  /** Tokens the training corpus encodes to with the final merges (special tokens count one each). */
  corpusTokens: number;
  seconds: number;
  countSeconds: number;
  mergeSeconds: number;
}

export function trainByteLevelBpe(texts: Iterable<string>, options: BpeTrainerOptions): TokenizerJson {
  return trainByteLevelBpeWithStats(texts, options).tokenizer;
}

export function trainByteLevelBpeWithStats(
  texts: Iterable<string>,
  options: BpeTrainerOptions,
): { tokenizer: TokenizerJson; stats: BpeTrainingStats } {
  const started = performance.now();
  const specials = [...(options.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  const minFrequency = options.minFrequency ?? 2;
  if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) {
    throw new Error('trainByteLevelBpe: special tokens must be distinct and non-empty');
  }
  const baseSize = specials.length + 256;
  if (!Number.isInteger(options.vocabSize) || options.vocabSize < baseSize || options.vocabSize > MAX_VOCAB) {
    throw new Error(
      `trainByteLevelBpe: vocabSize must be an integer in [${baseSize}, ${MAX_VOCAB}] (specials + 256 bytes at least), got ${options.vocabSize}`,
    );
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1)
    throw new Error(`trainByteLevelBpe: minFrequency must be a positive integer, got ${minFrequency}`);

  // 1. Unique pre-tokens with their frequencies, split exactly as the library will split at encode time.
  const { wordCounts, inputBytes, specialCount } = countPreTokens(texts, specials);
  const countSeconds = (performance.now() - started) / 1000;

  // Ids: specials first, then the 256 bytes, then merges.
  const tokenStrings: string[] = [...specials, ...BYTE_TO_CHAR];
  const tokenIds = new Map<string, number>(tokenStrings.map((s, i) => [s, i]));
  const byteId = specials.length;

  // 2. Words as runs of symbol ids in one pool; a word shrinks in place as pairs merge.
  const encoder = new TextEncoder();
  let poolLength = 0;
  const encodedWords: Uint8Array[] = [];
  const frequencies: number[] = [];
  let singleSymbolTokens = 0;
  for (const [word, count] of wordCounts) {
    const bytes = encoder.encode(word);
    if (bytes.length < 2) {
      singleSymbolTokens += count;
      continue;
    }
    encodedWords.push(bytes);
    frequencies.push(count);
    poolLength += bytes.length;
  }
  wordCounts.clear();
  const wordCount = encodedWords.length;
  const pool = new Int32Array(poolLength);
  const wordStart = new Int32Array(wordCount);
  const wordLength = new Int32Array(wordCount);
  const wordFrequency = Float64Array.from(frequencies);
  let cursor = 0;
  for (let w = 0; w < wordCount; w++) {
    const bytes = encodedWords[w];
    wordStart[w] = cursor;
    wordLength[w] = bytes.length;
    for (let i = 0; i < bytes.length; i++) pool[cursor++] = byteId + bytes[i];
  }
  encodedWords.length = 0;

  // 3. Pair counts and the pair -> words index.
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, number[]>();
  for (let w = 0; w < wordCount; w++) {
    const start = wordStart[w];
    const end = start + wordLength[w];
    const f = wordFrequency[w];
    for (let i = start; i + 1 < end; i++) {
      const key = pool[i] * PAIR_BASE + pool[i + 1];
      pairCounts.set(key, (pairCounts.get(key) ?? 0) + f);
      let words = pairWords.get(key);
      if (!words) pairWords.set(key, (words = []));
      if (words[words.length - 1] !== w) words.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [key, count] of pairCounts) heap.push(count, key);

  // 4. Merge loop.
  const mergeStarted = performance.now();
  const merges: string[] = [];
  const visitedAt = new Int32Array(wordCount).fill(-1);
  const delta = new Map<number, number>();
  while (tokenStrings.length < options.vocabSize && heap.size > 0) {
    const count = heap.topCount();
    const key = heap.topKey();
    heap.pop();
    const actual = pairCounts.get(key) ?? 0;
    if (actual !== count) {
      if (actual > 0) heap.push(actual, key); // stale entry: requeue with the live count
      continue;
    }
    if (actual < minFrequency) break;

    const a = Math.floor(key / PAIR_BASE);
    const b = key - a * PAIR_BASE;
    const merged = tokenStrings[a] + tokenStrings[b];
    let c = tokenIds.get(merged);
    if (c === undefined) {
      c = tokenStrings.length;
      tokenStrings.push(merged);
      tokenIds.set(merged, c);
    }
    const mergeIndex = merges.length;
    merges.push(`${tokenStrings[a]} ${tokenStrings[b]}`);

    const words = pairWords.get(key) ?? [];
    pairWords.delete(key);
    pairCounts.delete(key);
    delta.clear();
    const change = (left: number, right: number, amount: number, w: number): void => {
      const changed = left * PAIR_BASE + right;
      if (changed === key) return; // the merged pair disappears entirely; its count is dropped above
      delta.set(changed, (delta.get(changed) ?? 0) + amount);
      if (amount > 0) {
        let list = pairWords.get(changed);
        if (!list) pairWords.set(changed, (list = []));
        if (list[list.length - 1] !== w) list.push(w);
      }
    };
    for (const w of words) {
      if (visitedAt[w] === mergeIndex) continue;
      visitedAt[w] = mergeIndex;
      const start = wordStart[w];
      const end = start + wordLength[w];
      const f = wordFrequency[w];
      let read = start;
      let write = start;
      while (read < end) {
        if (read + 1 < end && pool[read] === a && pool[read + 1] === b) {
          if (write > start) {
            const previous = pool[write - 1];
            change(previous, a, -f, w);
            change(previous, c, f, w);
          }
          if (read + 2 < end) {
            const next = pool[read + 2];
            change(b, next, -f, w);
            change(c, next, f, w);
          }
          pool[write++] = c;
          read += 2;
        } else {
          pool[write++] = pool[read++];
        }
      }
      wordLength[w] = write - start;
    }
    for (const [changed, amount] of delta) {
      if (amount === 0) continue;
      const updated = (pairCounts.get(changed) ?? 0) + amount;
      if (updated > 0) pairCounts.set(changed, updated);
      else pairCounts.delete(changed);
      if (amount > 0) heap.push(updated, changed);
    }
  }
  const mergeSeconds = (performance.now() - mergeStarted) / 1000;

  let corpusTokens = singleSymbolTokens + specialCount;
  for (let w = 0; w < wordCount; w++) corpusTokens += wordLength[w] * wordFrequency[w];

  const vocab: Record<string, number> = {};
  tokenStrings.forEach((token, id) => {
    vocab[token] = id;
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizer: TokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null, // none: encode -> decode must give back the exact text
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: PRETOKENIZE_PATTERN }, behavior: 'Isolated', invert: false },
        byteLevel,
      ],
    },
    post_processor: { ...byteLevel },
    decoder: { ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const stats: BpeTrainingStats = {
    inputBytes,
    uniqueWords: wordCount,
    merges: merges.length,
    vocabSize: tokenStrings.length,
    corpusTokens,
    seconds: (performance.now() - started) / 1000,
    countSeconds,
    mergeSeconds,
  };
  return { tokenizer, stats };
}

/** Pair key = left * PAIR_BASE + right; exact in a double for ids below 2^21. */
const PAIR_BASE = 2 ** 21;
const MAX_VOCAB = PAIR_BASE;

function countPreTokens(
  texts: Iterable<string>,
  specials: string[],
): { wordCounts: Map<string, number>; inputBytes: number; specialCount: number } {
  const splitter = new SplitPreTokenizer({
    type: 'Split',
    pattern: { Regex: PRETOKENIZE_PATTERN },
    behavior: 'Isolated',
    invert: false,
  });
  const pattern = splitter.pattern;
  if (!pattern) throw new Error('trainByteLevelBpe: the pre-tokenizer pattern did not compile');
  // Longest first, as the library's added-token splitter prefers the longest match.
  const specialPattern =
    specials.length > 0
      ? new RegExp(
          [...specials]
            .sort((x, y) => y.length - x.length)
            .map(escapeRegExp)
            .join('|'),
          'g',
        )
      : null;
  const wordCounts = new Map<string, number>();
  let inputBytes = 0;
  let specialCount = 0;
  const countSegment = (segment: string): void => {
    let previous = 0;
    for (const match of segment.matchAll(pattern)) {
      const index = match.index ?? 0;
      if (index > previous) bump(segment.slice(previous, index));
      if (match[0].length > 0) bump(match[0]);
      previous = index + match[0].length;
    }
    if (previous < segment.length) bump(segment.slice(previous));
  };
  const bump = (word: string): void => {
    wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  };
  for (const text of texts) {
    if (typeof text !== 'string') throw new Error('trainByteLevelBpe: every training text must be a string');
    inputBytes += Buffer.byteLength(text, 'utf8');
    if (!specialPattern) {
      countSegment(text);
      continue;
    }
    let previous = 0;
    for (const match of text.matchAll(specialPattern)) {
      const index = match.index ?? 0;
      if (index > previous) countSegment(text.slice(previous, index));
      specialCount++;
      previous = index + match[0].length;
    }
    if (previous < text.length) countSegment(text.slice(previous));
  }
  return { wordCounts, inputBytes, specialCount };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Max-heap of (count, pair key); ties go to the smaller key so training is deterministic. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  topCount(): number {
    return this.counts[0];
  }

  topKey(): number {
    return this.keys[0];
  }

  push(count: number, key: number): void {
    const counts = this.counts;
    const keys = this.keys;
    let i = counts.length;
    counts.push(count);
    keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(count, key, counts[parent], keys[parent])) break;
      counts[i] = counts[parent];
      keys[i] = keys[parent];
      i = parent;
    }
    counts[i] = count;
    keys[i] = key;
  }

  pop(): void {
    const counts = this.counts;
    const keys = this.keys;
    const lastCount = counts.pop() as number;
    const lastKey = keys.pop() as number;
    const n = counts.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && this.before(counts[right], keys[right], counts[left], keys[left]) ? right : left;
      if (!this.before(counts[child], keys[child], lastCount, lastKey)) break;
      counts[i] = counts[child];
      keys[i] = keys[child];
      i = child;
    }
    counts[i] = lastCount;
    keys[i] = lastKey;
  }

  private before(countA: number, keyA: number, countB: number, keyB: number): boolean {
    return countA > countB || (countA === countB && keyA < keyB);
  }
}
