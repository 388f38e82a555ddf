// Repository context for the prompt: the windows of other files most similar to the code around
// the cursor (Jaccard similarity of identifier sets, as Copilot's and Continue's "similar
// snippets"). Sources are the open documents today; the mined index joins them once it exists.
import type { ContextSnippet } from '../completion/prompt';
import { scanSecrets } from '../../trainer/data/mining/secrets';

export interface SnippetSource {
  /** Workspace-relative path. */
  path: string;
  text: string;
}

export interface SnippetOptions {
  windowLines: number;
  maxSnippets: number;
  /** Below this similarity a window is noise, not context. */
  minSimilarity: number;
  /** Larger documents are skipped: scanning a 10 MB file took ~0.2 s of every request. */
  maxSourceChars: number;
}

export const defaultSnippetOptions: SnippetOptions = {
  windowLines: 20,
  maxSnippets: 3,
  minSimilarity: 0.1,
  maxSourceChars: 1_000_000,
};

const identifier = /[A-Za-z_$][A-Za-z0-9_$]*/g;

export function identifierSet(text: string): Set<string> {
  return new Set(text.match(identifier) ?? []);
}

export function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  if (a.size === 0 && b.size === 0) return 0;
  let shared = 0;
  for (const item of a) if (b.has(item)) shared++;
  return shared / (a.size + b.size - shared);
}

/** The most similar window of each source (non-overlapping by construction), best first. */
export function similarSnippets(
  cursorContext: string,
  sources: readonly SnippetSource[],
  options: SnippetOptions = defaultSnippetOptions,
): ContextSnippet[] {
  const target = identifierSet(cursorContext);
  if (target.size === 0) return [];
  const scored: { snippet: ContextSnippet; score: number }[] = [];
  for (const source of sources) {
    if (source.text.length > options.maxSourceChars) continue;
    const lines = source.text.split('\n');
    const step = Math.max(1, Math.floor(options.windowLines / 2));
    let best: { snippet: ContextSnippet; score: number } | null = null;
    for (let start = 0; start < lines.length; start += step) {
      const text = lines.slice(start, start + options.windowLines).join('\n');
      const score = jaccard(target, identifierSet(text));
      // Credentials in other open files never enter the prompt, so the model cannot copy them
      // (scanned only for a window that would become the best: this runs on every request).
      if (score >= options.minSimilarity && (best === null || score > best.score) && scanSecrets(text).length === 0)
        best = { snippet: { path: source.path, text }, score };
      if (start + options.windowLines >= lines.length) break;
    }
    if (best) scored.push(best);
  }
  scored.sort((a, b) => b.score - a.score);
  return scored.slice(0, options.maxSnippets).map((entry) => entry.snippet);
}
