import { createHash } from 'node:crypto';
import type { DatasetReader } from '../../data/dataset/reader';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { ScoreSequence } from './handlers';

// The temporal held-out split of a dataset file as evaluation inputs: the held-out files' plain
// windows (scored for loss and bits per byte) and their changed lines as FIM prompts whose middle
// is the rest of the line (greedy completion: exact match, edit similarity). Both are bounded and
// sampled deterministically (evenly spaced in file order), so base and adapter see the same inputs.

export interface HeldOutLine {
  /** <fim_prefix> prefix <fim_suffix> suffix <fim_middle>: what the completion server sends. */
  prompt: Int32Array;
  /** The rest of the line, as written in the held-out commit. */
  expected: string;
  /** Tokens the model may generate. */
  maxTokens: number;
  path: string;
}

export interface HeldOutSet {
  sequences: ScoreSequence[];
  /** UTF-8 bytes of the scored targets (special tokens count 0). */
  bytes: number;
  /** Scored targets. */
  tokens: number;
  lines: HeldOutLine[];
  /** Held-out commits and changed lines of the split (all of them, not only the sample). */
  commits: number;
  changedLines: number;
  files: number;
  /** Held-out examples in the dataset (before sampling) and their tokens. */
  examples: number;
  exampleTokens: number;
  /** sha256 of the sampled token sequences and prompts: two evaluations compare only if equal. */
  sha256: string;
}

/** What `idiom train` and `idiom eval` report of the held-out split. */
export interface HeldOutSummary {
  commits: number;
  lines: number;
  files: number;
  tokens: number;
  completedLines: number;
}

export function heldOutSummary(set: HeldOutSet): HeldOutSummary {
  return {
    commits: set.commits,
    lines: set.changedLines,
    files: set.files,
    tokens: set.tokens,
    completedLines: set.lines.length,
  };
}

export interface HeldOutOptions {
  /** Upper bound on scored tokens. Default 32,768. */
  maxScoreTokens?: number;
  /** Upper bound on completed lines. Default 64. */
  maxLines?: number;
}

export const DEFAULT_MAX_SCORE_TOKENS = 32_768;
export const DEFAULT_MAX_LINES = 64;

export function selectHeldOut(reader: DatasetReader, tokenizer: Tokenizer, options: HeldOutOptions = {}): HeldOutSet {
  const maxScoreTokens = options.maxScoreTokens ?? DEFAULT_MAX_SCORE_TOKENS;
  const maxLines = options.maxLines ?? DEFAULT_MAX_LINES;
  const plain: { tokens: Int32Array; lossStart: number }[] = [];
  const lineExamples: { tokens: Int32Array; lossStart: number; file: number }[] = [];
  let examples = 0;
  let exampleTokens = 0;
  for (const example of reader.examples('heldout')) {
    examples++;
    exampleTokens += example.tokens.length;
    if (example.record.kind === 'plain') plain.push({ tokens: example.tokens, lossStart: example.record.lossStart });
    else if (example.record.kind === 'fim-line-rest')
      lineExamples.push({ tokens: example.tokens, lossStart: example.record.lossStart, file: example.record.file });
  }
  const totalPlain = plain.reduce((n, p) => n + p.tokens.length, 0);
  const wanted =
    totalPlain <= maxScoreTokens ? plain.length : Math.max(1, Math.floor((plain.length * maxScoreTokens) / totalPlain));
  const sequences: ScoreSequence[] = [];
  let tokens = 0;
  for (const index of evenlySpaced(plain.length, wanted)) {
    const p = plain[index];
    if (tokens + p.tokens.length > maxScoreTokens && sequences.length > 0) break;
    sequences.push({ tokens: p.tokens, lossStart: p.lossStart });
    tokens += p.tokens.length;
  }

  const hash = createHash('sha256');
  let bytes = 0;
  let scored = 0;
  const byteCount = new Map<number, number>();
  const bytesOf = (id: number): number => {
    let n = byteCount.get(id);
    if (n === undefined) {
      n = tokenizer.specialIds.has(id) ? 0 : tokenizer.tokenBytes(id).length;
      byteCount.set(id, n);
    }
    return n;
  };
  for (const sequence of sequences) {
    const ids = sequence.tokens as Int32Array;
    hash.update(new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
    for (let i = Math.max(1, sequence.lossStart); i < ids.length; i++) {
      bytes += bytesOf(ids[i]);
      scored++;
    }
  }

  const lines: HeldOutLine[] = [];
  const eos = tokenizer.eos;
  for (const index of evenlySpaced(lineExamples.length, Math.min(maxLines, lineExamples.length))) {
    const example = lineExamples[index];
    const end =
      eos !== null && example.tokens[example.tokens.length - 1] === eos
        ? example.tokens.length - 1
        : example.tokens.length;
    const middle = Array.from(example.tokens.subarray(example.lossStart, end));
    const prompt = example.tokens.slice(0, example.lossStart);
    hash.update(new Uint8Array(prompt.buffer, prompt.byteOffset, prompt.byteLength));
    lines.push({
      prompt,
      expected: tokenizer.decode(middle),
      maxTokens: Math.min(64, Math.max(16, 2 * middle.length)),
      path: reader.header.files[example.file]?.path ?? '',
    });
  }
  const split = reader.header.split;
  return {
    sequences,
    bytes,
    tokens: scored,
    lines,
    commits: split?.heldOutCommits?.length ?? 0,
    changedLines: split?.heldOutLines ?? 0,
    files: split?.heldOutFiles ?? 0,
    examples,
    exampleTokens,
    sha256: hash.digest('hex'),
  };
}

/** `count` indices spread evenly over [0, n), ascending. */
export function evenlySpaced(n: number, count: number): number[] {
  const out: number[] = [];
  for (let k = 0; k < count; k++) out.push(Math.floor((k * n) / count));
  return out;
}

/** Ids whose bytes hold a newline: greedy line completion stops after one. */
export function newlineTokenIds(tokenizer: Tokenizer): number[] {
  const ids: number[] = [];
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    if (tokenizer.specialIds.has(id) || tokenizer.idToToken(id) === undefined) continue;
    if (tokenizer.tokenBytes(id).includes(10)) ids.push(id);
  }
  return ids;
}
