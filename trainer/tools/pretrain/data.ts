// Training documents and the packed token stream. Each file is cut at line boundaries into
// segments of at most FIM_SEGMENT_CHARS characters; each segment becomes, with probability
// fimRate, a fill-in-the-middle example in PSM order over a random character span
// (<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>, the middle
// chosen by two uniform cut points as in Bavarian et al. 2022); runs of consecutive non-FIM
// segments stay one plain document. Every document ends with <|endoftext|>. Documents are
// concatenated into one stream that is cut into rows of T+1 tokens (packing without masks).
//
// This is a simple character-span FIM split, not trainer/data/mining's AST-boundary examples: a
// pretraining corpus wants spans anywhere (mid-line included), and this needs no parser.
// Cut points: 'char' takes them uniformly; 'word' moves each back to the nearest word boundary
// (not inside a run of identifier characters) except with probability WORD_CUT_KEEP. With 'char',
// most middles began inside a word, and idiom-tiny learnt to begin every middle with a word's
// tail ("nst x = …" where a line starts): a completion at a word boundary lost its first token.

import { Rng } from '../../model/random';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { CorpusFile } from './corpus';

/** Segments small enough that prefix, suffix and middle fit one 256-token training row. */
export const FIM_SEGMENT_CHARS = 700;

export interface SpecialIds {
  eos: number;
  prefix: number;
  suffix: number;
  middle: number;
}

export function specialIds(tokenizer: Tokenizer): SpecialIds {
  const id = (name: string): number => {
    const v = tokenizer.tokenId(name);
    if (v === undefined) throw new Error(`tokenizer has no ${name} token`);
    return v;
  };
  return {
    eos: id('<|endoftext|>'),
    prefix: id('<|fim_prefix|>'),
    suffix: id('<|fim_suffix|>'),
    middle: id('<|fim_middle|>'),
  };
}

/** Cuts `text` into pieces of at most `maxChars`, at line ends where possible (a longer line is cut inside). */
export function segmentText(text: string, maxChars = FIM_SEGMENT_CHARS): string[] {
  const segments: string[] = [];
  let current = '';
  for (const line of text.split(/(?<=\n)/)) {
    if (current.length + line.length > maxChars && current.length > 0) {
      segments.push(current);
      current = '';
    }
    if (line.length > maxChars) {
      for (let i = 0; i < line.length; i += maxChars) segments.push(line.slice(i, i + maxChars));
    } else current += line;
  }
  if (current.length > 0) segments.push(current);
  return segments;
}

export interface FimSplit {
  prefix: string;
  middle: string;
  suffix: string;
}

export type FimCuts = 'char' | 'word';
/** With 'word' cuts, the share of cut points left where they fell (inside a word, often). */
export const WORD_CUT_KEEP = 0.25;
const WORD_CHAR = /[A-Za-z0-9_$]/;

/** A random span of `text` as the middle (cut points uniform over [0, length], moved to word boundaries with 'word'; surrogate pairs kept whole). */
export function randomFimSplit(text: string, rng: Rng, cuts: FimCuts = 'char'): FimSplit {
  const cut = (): number => {
    let at = Math.floor(rng.next() * (text.length + 1));
    if (cuts === 'word' && rng.next() >= WORD_CUT_KEEP) {
      while (at > 0 && at < text.length && WORD_CHAR.test(text[at - 1]) && WORD_CHAR.test(text[at])) at--;
    }
    // Never split a surrogate pair: both halves would become invalid UTF-16.
    if (at > 0 && at < text.length && /[\uDC00-\uDFFF]/.test(text[at])) at--;
    return at;
  };
  let a = cut();
  let b = cut();
  if (a > b) [a, b] = [b, a];
  return { prefix: text.slice(0, a), middle: text.slice(a, b), suffix: text.slice(b) };
}

/** PSM tokens of one FIM example, ending with <|endoftext|>. */
export function encodeFim(tokenizer: Tokenizer, ids: SpecialIds, split: FimSplit): number[] {
  const enc = (s: string): number[] => (s.length > 0 ? tokenizer.encode(s, { specialsAsText: true }) : []);
  return [
    ids.prefix,
    ...enc(split.prefix),
    ids.suffix,
    ...enc(split.suffix),
    ids.middle,
    ...enc(split.middle),
    ids.eos,
  ];
}

export interface PackStats {
  files: number;
  bytes: number;
  tokens: number;
  fimExamples: number;
  plainDocuments: number;
}

/** Encodes `files` into one token stream (documents as described above), deterministic in `seed`. */
export function encodeTrainingStream(
  files: readonly CorpusFile[],
  tokenizer: Tokenizer,
  options: { fimRate: number; seed: number; fimCuts?: FimCuts; log?: (line: string) => void },
): { tokens: Int32Array; stats: PackStats } {
  if (!(options.fimRate >= 0 && options.fimRate <= 1))
    throw new Error(`fimRate must be in [0, 1], got ${options.fimRate}`);
  const ids = specialIds(tokenizer);
  const rng = new Rng(options.seed);
  let buffer = new Int32Array(1 << 20);
  let length = 0;
  const push = (values: readonly number[]): void => {
    if (length + values.length > buffer.length) {
      const grown = new Int32Array(Math.max(buffer.length * 2, length + values.length));
      grown.set(buffer.subarray(0, length));
      buffer = grown;
    }
    buffer.set(values, length);
    length += values.length;
  };
  const stats: PackStats = { files: 0, bytes: 0, tokens: 0, fimExamples: 0, plainDocuments: 0 };
  for (const file of files) {
    stats.files++;
    stats.bytes += Buffer.byteLength(file.text);
    let plain = '';
    const flushPlain = (): void => {
      if (plain.length === 0) return;
      push(tokenizer.encode(plain, { specialsAsText: true }));
      push([ids.eos]);
      stats.plainDocuments++;
      plain = '';
    };
    for (const segment of segmentText(file.text)) {
      if (rng.next() < options.fimRate) {
        flushPlain();
        push(encodeFim(tokenizer, ids, randomFimSplit(segment, rng, options.fimCuts)));
        stats.fimExamples++;
      } else plain += segment;
    }
    flushPlain();
    if (options.log && stats.files % 1000 === 0)
      options.log(`encoded ${stats.files}/${files.length} files, ${length} tokens`);
  }
  stats.tokens = length;
  return { tokens: buffer.slice(0, length), stats };
}

/**
 * Rows of T+1 tokens from a packed stream (row r = stream[r·T … r·T+T]) in a seeded order that
 * is reshuffled every epoch; batch(step) is a pure function of step, so a resumed run sees
 * exactly the batches it would have seen.
 */
export class RowSampler {
  readonly rows: number;
  private epochOrder: Uint32Array | undefined;
  private epoch = -1;

  constructor(
    private readonly stream: Int32Array,
    readonly batch: number,
    readonly seqLen: number,
    private readonly seed: number,
  ) {
    this.rows = Math.floor((stream.length - 1) / seqLen);
    if (this.rows < batch)
      throw new Error(
        `the token stream (${stream.length} tokens) is too short for one batch of ${batch}×${seqLen + 1}`,
      );
  }

  private order(epoch: number): Uint32Array {
    if (epoch !== this.epoch || !this.epochOrder) {
      const order = new Uint32Array(this.rows);
      for (let i = 0; i < this.rows; i++) order[i] = i;
      const rng = new Rng(this.seed + 7919 * epoch);
      for (let i = this.rows - 1; i > 0; i--) {
        const j = Math.floor(rng.next() * (i + 1));
        const t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
      this.epochOrder = order;
      this.epoch = epoch;
    }
    return this.epochOrder;
  }

  /** tokens [B, T+1] of step `step` (0-based). */
  batchAt(step: number): Int32Array {
    const { batch: B, seqLen: T } = this;
    const out = new Int32Array(B * (T + 1));
    const perEpoch = Math.floor(this.rows / B);
    const epoch = Math.floor(step / perEpoch);
    const order = this.order(epoch);
    const first = (step % perEpoch) * B;
    for (let b = 0; b < B; b++) {
      const row = order[first + b];
      out.set(this.stream.subarray(row * T, row * T + T + 1), b * (T + 1));
    }
    return out;
  }

  /** Fraction of an epoch per step. */
  get epochsPerStep(): number {
    return this.batch / this.rows;
  }
}
