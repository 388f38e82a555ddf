import type { HeldOutMetrics } from '../../adapters/manifest';

// Held-out metrics from raw sums: loss (nats per scored token), perplexity, bits per byte (Σ NLL in
// bits over the UTF-8 bytes of the scored text), next-line exact match and edit similarity.

export interface ScoreTotals {
  /** Σ NLL over the scored targets, nats. */
  nll: number;
  /** Scored targets. */
  tokens: number;
  /** UTF-8 bytes of the scored targets' text (special tokens count 0). */
  bytes: number;
}

export interface CompletionTotals {
  lines: number;
  exact: number;
  /** Σ edit similarity over the lines. */
  similarity: number;
}

export function heldOutMetrics(score: ScoreTotals, completion: CompletionTotals): HeldOutMetrics {
  if (score.tokens === 0)
    throw new Error(
      'no held-out tokens to score: the repository needs a held-out split (at least two commits touching code)',
    );
  const loss = score.nll / score.tokens;
  return {
    loss,
    perplexity: Math.exp(loss),
    bitsPerByte: score.bytes > 0 ? score.nll / Math.LN2 / score.bytes : 0,
    exactMatch: completion.lines > 0 ? completion.exact / completion.lines : 0,
    editSimilarity: completion.lines > 0 ? completion.similarity / completion.lines : 0,
    tokens: score.tokens,
    bytes: score.bytes,
    lines: completion.lines,
  };
}

/**
 * 1 − Levenshtein(a, b) / max(|a|, |b|) over code points; 1 for two empty strings.
 * Written here because it is one small dynamic program over two short lines.
 */
export function editSimilarity(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  if (x.length === 0 && y.length === 0) return 1;
  let previous = Array.from({ length: y.length + 1 }, (_, j) => j);
  let current = new Array<number>(y.length + 1);
  for (let i = 1; i <= x.length; i++) {
    current[0] = i;
    for (let j = 1; j <= y.length; j++) {
      const substitution = previous[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1);
      current[j] = Math.min(substitution, previous[j] + 1, current[j - 1] + 1);
    }
    [previous, current] = [current, previous];
  }
  return 1 - previous[y.length] / Math.max(x.length, y.length);
}

/** A completed line as compared: cut at the first newline, trailing whitespace dropped. */
export function normalizeLine(text: string): string {
  const newline = text.indexOf('\n');
  return (newline >= 0 ? text.slice(0, newline) : text).replace(/\s+$/, '');
}
