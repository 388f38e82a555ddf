// Recall: before the model decodes, what the open document and the repository memory say follows
// the text before the cursor. A line written the same way elsewhere (in this file, or in the
// repository the adapter was trained on) is shown as it is, when enough of the text before the
// cursor agrees with the place it comes from and most such places agree on it; no decode is
// needed then. `idiom bench quality` calibrates the defaults.

import { RepositoryMemory, type MemoryMatch } from '../../trainer/data/memory/memory';

export interface RecallOptions {
  /** Units (words, punctuation, line breaks) before the cursor that must agree. */
  minMatchedUnits: number;
  /** Share of the agreeing places that must propose the same text (above). */
  minAgreement: number;
  /** The open document is searched this far around the cursor (characters). */
  documentWindowChars: number;
}

export const defaultRecallOptions: RecallOptions = {
  minMatchedUnits: 8,
  minAgreement: 0.5,
  documentWindowChars: 32_000,
};

export interface Recalled extends MemoryMatch {
  source: 'document' | 'repository';
}

/** The best recalled continuation at the cursor, or null when nothing agrees enough. */
export function recall(
  prefix: string,
  suffix: string,
  path: string,
  repository: RepositoryMemory | null,
  options: RecallOptions = defaultRecallOptions,
): Recalled | null {
  // The document around the cursor, in two parts, so the cursor's own place never matches itself.
  const before = prefix.slice(-options.documentWindowChars);
  const after = suffix.slice(0, options.documentWindowChars / 2);
  const document = new RepositoryMemory([
    { path, text: `${before}\n` },
    { path, text: after },
  ]).lookup(before);
  // The open file first: where both agree enough, the file's own way of writing the line wins
  // (measured on replayed held-out lines of three repositories: as precise, more lines exact).
  const agrees = (match: MemoryMatch | null) =>
    match !== null &&
    match.matchedUnits >= options.minMatchedUnits &&
    match.votes / match.places > options.minAgreement;
  if (agrees(document)) return { ...document!, source: 'document' };
  const fromRepository = repository?.lookup(prefix) ?? null;
  return agrees(fromRepository) ? { ...fromRepository!, source: 'repository' } : null;
}
