// Review's pure parts: from per-token surprisal to per-line scores, the overlapping windows a long
// file is scored in, the repository percentile, and the AUC of a ranking. No model, no I/O.

export type Aggregate = 'mean' | 'max';
export const AGGREGATES: readonly Aggregate[] = ['mean', 'max'];

/** Bits per nat: surprisal is reported in bits (−log₂ p). */
export const BITS_PER_NAT = 1 / Math.LN2;

/** Lines of `text` split on '\n' (a '\r' before it stays in the line's text). */
export function splitLines(text: string): string[] {
  return text.split('\n');
}

/** Lines that hold something besides whitespace: only these are scored, sampled and flagged. */
export function contentLines(lines: readonly string[]): boolean[] {
  return lines.map((line) => /\S/.test(line));
}

/**
 * The 0-based line of each token, given each token's UTF-8 byte length in order (they must add up
 * to the text's bytes). A token belongs to the line of its first byte that is not a line break: a
 * "\n    " token is the next line's indentation; a lone "\n" (or ";\n") ends its own line.
 */
export function tokenLines(text: string, tokenByteLengths: readonly number[]): Int32Array {
  const bytes = Buffer.from(text, 'utf8');
  const total = tokenByteLengths.reduce((sum, n) => sum + n, 0);
  if (total !== bytes.length) {
    throw new Error(
      `token byte lengths add up to ${total}, the text has ${bytes.length} bytes (review needs a byte-level tokenizer)`,
    );
  }
  // lineOfByte[i]: the line holding byte i ('\n' belongs to the line it ends).
  const lineOfByte = new Int32Array(bytes.length);
  let line = 0;
  for (let i = 0; i < bytes.length; i++) {
    lineOfByte[i] = line;
    if (bytes[i] === 0x0a) line++;
  }
  const result = new Int32Array(tokenByteLengths.length);
  let at = 0;
  tokenByteLengths.forEach((length, t) => {
    let chosen = at;
    while (chosen < at + length && (bytes[chosen] === 0x0a || bytes[chosen] === 0x0d)) chosen++;
    if (chosen === at + length) chosen = at; // only line breaks: the line they end
    result[t] = length === 0 ? (at < bytes.length ? lineOfByte[at] : line) : lineOfByte[chosen];
    at += length;
  });
  return result;
}

/** Per-line aggregate of token surprisal (bits); NaN for lines without content or scored tokens. */
export interface LineScores {
  mean: Float64Array;
  max: Float64Array;
  /** Scored tokens per line. */
  tokens: Int32Array;
}

/**
 * Aggregates token surprisal (bits) into lines. `lineOfToken[t]` is the line of token t; tokens
 * with NaN surprisal (the first token of a file without a start token) are skipped.
 */
export function aggregateLines(
  lineOfToken: Int32Array,
  bits: ArrayLike<number>,
  lineCount: number,
  hasContent: readonly boolean[],
): LineScores {
  const sum = new Float64Array(lineCount);
  const max = new Float64Array(lineCount).fill(-Infinity);
  const tokens = new Int32Array(lineCount);
  for (let t = 0; t < lineOfToken.length; t++) {
    const value = bits[t];
    if (Number.isNaN(value)) continue;
    const line = lineOfToken[t];
    sum[line] += value;
    if (value > max[line]) max[line] = value;
    tokens[line]++;
  }
  const mean = new Float64Array(lineCount);
  for (let line = 0; line < lineCount; line++) {
    if (tokens[line] === 0 || !hasContent[line]) {
      mean[line] = NaN;
      max[line] = NaN;
    } else {
      mean[line] = sum[line] / tokens[line];
    }
  }
  return { mean, max, tokens };
}

/**
 * Windows of one length covering a sequence of n tokens whose model sees at most `maxLength`:
 * starts 0, stride, 2·stride … with the last one ending at n. Every target after the first window
 * is scored from the window that gives it the most context (at least maxLength − stride tokens).
 */
export function scoringWindows(n: number, maxLength: number): { starts: number[]; length: number } {
  if (!(Number.isInteger(maxLength) && maxLength >= 2))
    throw new Error(`scoring windows need at least 2 tokens, got ${maxLength}`);
  if (n <= maxLength) return { starts: [0], length: n };
  const stride = Math.max(1, Math.floor(maxLength / 2));
  const starts: number[] = [];
  for (let start = 0; start + maxLength < n; start += stride) starts.push(start);
  starts.push(n - maxLength);
  return { starts, length: maxLength };
}

/**
 * From the windows' per-token NLL (result[w·(L − 1) + i] = NLL of token starts[w] + i + 1) to one
 * NLL per token: out[p] for p = 1..n − 1 from the window where p has the longest context; out[0] = NaN.
 */
export function pickTokenNll(
  nll: ArrayLike<number>,
  starts: readonly number[],
  length: number,
  n: number,
): Float64Array {
  const out = new Float64Array(n);
  out[0] = NaN;
  let w = 0;
  for (let p = 1; p < n; p++) {
    // The first window (smallest start) that still contains p: the most context before p.
    while (starts[w] + length - 1 < p) w++;
    out[p] = nll[w * (length - 1) + (p - starts[w] - 1)];
  }
  return out;
}

/** Ascending copy without NaN. */
export function sortedFinite(values: Iterable<number>): number[] {
  return [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
}

/**
 * The score above which a line is in the top `topPercent` % of `sorted` (ascending): the
 * (100 − topPercent)th percentile, linearly interpolated. A line is flagged when its score is
 * strictly greater.
 */
export function percentileThreshold(sorted: readonly number[], topPercent: number): number {
  if (!(topPercent > 0 && topPercent < 100))
    throw new Error(`the review percentile must be in (0, 100), got ${topPercent}`);
  if (sorted.length === 0) throw new Error('no line scores to take a percentile of');
  const q = 1 - topPercent / 100;
  const position = q * (sorted.length - 1);
  const low = Math.floor(position);
  const high = Math.min(sorted.length - 1, low + 1);
  return sorted[low] + (sorted[high] - sorted[low]) * (position - low);
}

/**
 * Area under the ROC curve: the probability that a random positive scores above a random
 * negative (ties count half), by the Mann–Whitney rank sum. NaN when either side is empty.
 */
export function rocAuc(positives: readonly number[], negatives: readonly number[]): number {
  const P = positives.length;
  const N = negatives.length;
  if (P === 0 || N === 0) return NaN;
  const all = [...positives.map((v) => ({ v, pos: true })), ...negatives.map((v) => ({ v, pos: false }))].sort(
    (a, b) => a.v - b.v,
  );
  let rankSum = 0;
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j + 1 < all.length && all[j + 1].v === all[i].v) j++;
    const rank = (i + j) / 2 + 1; // average 1-based rank of the tie group
    for (let k = i; k <= j; k++) if (all[k].pos) rankSum += rank;
    i = j + 1;
  }
  return (rankSum - (P * (P + 1)) / 2) / (P * N);
}

/** 1-based numbers of the old file's lines that a `git diff -U0` removed or replaced, per file (b/ path). */
export function removedLinesFromUnifiedDiff(diff: string): Map<string, number[]> {
  const result = new Map<string, number[]>();
  let current: number[] | null = null;
  for (const line of diff.split('\n')) {
    if (line.startsWith('diff --git ')) {
      current = null;
    } else if (line.startsWith('+++ ')) {
      const target = line.slice(4).trim();
      if (target === '/dev/null') current = null;
      else {
        const name = target.startsWith('b/') ? target.slice(2) : target;
        current = [];
        result.set(name, current);
      }
    } else if (current && line.startsWith('@@')) {
      const match = /^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@/.exec(line);
      if (!match) continue;
      const start = Number(match[1]);
      const count = match[2] === undefined ? 1 : Number(match[2]);
      for (let i = 0; i < count; i++) current.push(start + i);
    }
  }
  return result;
}
