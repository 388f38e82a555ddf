// Secrets never become ghost text: a suggestion is withheld when it writes part of a
// credential-looking span in the lines around the cursor (the model may have memorised one, or
// copy one from the prompt). The scanner is mining's, so training data and suggestions follow
// one rule.

import { secretSpans, type SecretKind } from '../../trainer/data/mining/secrets';

/** Lines on each side of the cursor line that the check sees (`password = "`, key headers). */
const CONTEXT_LINES = 3;
/** Characters of a span the completion must write to count: closing a quote after a key the user typed is not a leak. */
const MIN_WRITTEN = 4;

/** The kind of credential `completion` would write at the cursor, or null. */
export function credentialAddedBy(prefix: string, completion: string, suffix: string): SecretKind | null {
  const before = lastLines(prefix, CONTEXT_LINES + 1);
  const after = firstLines(suffix, CONTEXT_LINES + 1);
  const from = before.length;
  const to = from + completion.length;
  for (const span of secretSpans(before + completion + after)) {
    if (Math.min(span.end, to) - Math.max(span.start, from) >= MIN_WRITTEN) return span.kind;
  }
  return null;
}

function lastLines(text: string, count: number): string {
  let at = text.length;
  for (let i = 0; i < count; i++) {
    const newline = at > 0 ? text.lastIndexOf('\n', at - 1) : -1;
    if (newline < 0) return text;
    at = newline;
  }
  return text.slice(at + 1);
}

function firstLines(text: string, count: number): string {
  let at = -1;
  for (let i = 0; i < count; i++) {
    const newline = text.indexOf('\n', at + 1);
    if (newline < 0) return text;
    at = newline;
  }
  return text.slice(0, at);
}
