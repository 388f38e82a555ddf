// The completion prompt: the file's first lines (when the prefix does not fit whole), repository
// context snippets, then as much of the prefix and the suffix as their token budgets allow, cut at
// line boundaries, in PSM order in the model family's template
// (trainer/model/tokenizer/fim.ts: <fim_prefix> context + prefix <fim_suffix> suffix <fim_middle>
// for Qwen); or, for a model that does not
// fill in the middle well, left to right: context + prefix, no suffix and no FIM markers.

import {
  type FimTemplate,
  encodeFimSuffix,
  fimMarkerCount,
  fimPromptTokens,
  promptStart,
} from '../../trainer/model/tokenizer/fim';
import { AUTO_INT8_PARAMETERS } from '../../trainer/model/precision';

/** 'psm': fill in the middle; 'prefix': continue the text before the cursor. */
export type PromptOrder = 'psm' | 'prefix';

/** What the prompt needs from a tokenizer (the trainer's Tokenizer satisfies it). */
export interface PromptTokenizer {
  encode(text: string): ArrayLike<number>;
}

export interface ContextSnippet {
  /** Workspace-relative path the snippet comes from. */
  path: string;
  text: string;
}

export interface PromptBudget {
  /** Tokens for the whole prompt, the three FIM markers included. */
  maxTokens: number;
  /** Shares of maxTokens; what the suffix and the context leave unused goes to the prefix. */
  suffixShare: number;
  contextShare: number;
  /**
   * The prefix starts at a multiple of this many document lines. While the user types, the
   * prompt's beginning then stays the same for several lines of growth, so the engine reuses its
   * KV cache instead of prefilling the whole prompt again each time a top line drops out.
   */
  prefixStartStep?: number;
  /**
   * Share of maxTokens for the document's first lines, put first when the prefix does not fit
   * whole. They are the same for every cursor position in a file, so after a jump to another
   * place the engine reuses their KV cache and prefills only the part around the cursor.
   */
  anchorShare?: number;
}

/** Continue's split (1024 tokens, 20% suffix), with a share for repository context. */
export const defaultPromptBudget: PromptBudget = {
  maxTokens: 1024,
  suffixShare: 0.2,
  contextShare: 0.15,
  prefixStartStep: 8,
  anchorShare: 0.25,
};

/**
 * Prompt tokens for a model of `parameters` parameters. Prefill runs every prompt token through
 * every weight, so a cold request's wait grows with the model: one past the int8 threshold gets
 * half the default, which the embedded model keeps.
 */
export function promptTokensFor(parameters: number): number {
  return parameters > AUTO_INT8_PARAMETERS ? defaultPromptBudget.maxTokens / 2 : defaultPromptBudget.maxTokens;
}

export interface PromptInput {
  prefix: string;
  suffix: string;
  /** Language id (or file extension) of the document, to write snippets as comments. */
  languageId: string;
  snippets: readonly ContextSnippet[];
}

export interface FimPrompt {
  tokens: Int32Array;
  /** The parts of the document that made it into the prompt. */
  prefixText: string;
  suffixText: string;
  /** What precedes prefixText: the document's first lines (anchorText), then the snippets. */
  contextText: string;
  anchorText: string;
}

const hashCommentLanguages = new Set([
  'python',
  'ruby',
  'shellscript',
  'bash',
  'sh',
  'perl',
  'r',
  'yaml',
  'toml',
  'dockerfile',
  'makefile',
  'julia',
  'elixir',
  'powershell',
  'coffeescript',
]);
const dashCommentLanguages = new Set(['sql', 'lua', 'haskell']);

export function lineCommentFor(languageId: string): string {
  if (hashCommentLanguages.has(languageId)) return '#';
  if (dashCommentLanguages.has(languageId)) return '--';
  return '//';
}

/** Snippets written as line comments headed by their path, as Continue and Copilot do. */
export function formatSnippets(snippets: readonly ContextSnippet[], languageId: string): string[] {
  const comment = lineCommentFor(languageId);
  return snippets.map((snippet) => {
    const body = snippet.text
      .replace(/\s+$/, '')
      .split('\n')
      .map((line) => `${comment} ${line}`.trimEnd())
      .join('\n');
    return `${comment} Path: ${snippet.path}\n${body}\n`;
  });
}

/**
 * Characters per token that no prompt is expected to exceed (this tokenizer's longest token is
 * 82 characters, code averages 3-4): text farther than budget × this from the cursor cannot reach
 * the prompt, so it is never tokenized (a minified file can hold megabytes on one line).
 */
export const MAX_CHARS_PER_TOKEN = 32;

function tokenCount(tokenizer: PromptTokenizer, text: string): number {
  return text === '' ? 0 : tokenizer.encode(text).length;
}

/**
 * The longest tail of `text` made of whole lines (the cursor line's start always kept) within
 * `budget` tokens, starting at a line whose index is a multiple of `startStep`.
 */
export function takeTailLines(text: string, budget: number, tokenizer: PromptTokenizer, startStep = 1): string {
  if (budget <= 0) return '';
  const lines = text.split('\n');
  let kept = lines.length;
  let used = 0;
  // Count line by line from the cursor outwards; one final exact count guards against merges
  // across line boundaries that per-line counts miss.
  while (kept > 0) {
    const line = kept === lines.length ? lines[kept - 1] : `${lines[kept - 1]}\n`;
    const cost = tokenCount(tokenizer, line);
    if (used + cost > budget) break;
    used += cost;
    kept--;
  }
  // The cursor line alone is over the budget (minified code): its end, not nothing.
  if (kept === lines.length) return fitted(lines[lines.length - 1].slice(-budget * 4), budget, tokenizer, 'end');
  // Round the first kept line up to the step (never past the cursor line).
  if (kept > 0 && startStep > 1) kept = Math.min(lines.length - 1, Math.ceil(kept / startStep) * startStep);
  let result = lines.slice(kept).join('\n');
  while (result !== '' && tokenCount(tokenizer, result) > budget) {
    const newline = result.indexOf('\n');
    result = newline < 0 ? '' : result.slice(newline + 1);
  }
  return result;
}

/** The longest head of `text` made of whole lines (the cursor line's rest always kept first) within `budget` tokens. */
export function takeHeadLines(text: string, budget: number, tokenizer: PromptTokenizer): string {
  if (budget <= 0) return '';
  const lines = text.split('\n');
  let kept = 0;
  let used = 0;
  while (kept < lines.length) {
    const line = kept === lines.length - 1 ? lines[kept] : `${lines[kept]}\n`;
    const cost = tokenCount(tokenizer, line);
    if (used + cost > budget) break;
    used += cost;
    kept++;
  }
  if (kept === 0) return fitted(lines[0].slice(0, budget * 4), budget, tokenizer, 'start');
  let result = lines.slice(0, kept).join('\n');
  if (kept < lines.length && kept > 0) result += '\n';
  while (result !== '' && tokenCount(tokenizer, result) > budget) {
    const trimmed = result.replace(/\n$/, '');
    const newline = trimmed.lastIndexOf('\n');
    result = newline < 0 ? '' : trimmed.slice(0, newline + 1);
  }
  return result;
}

/** `text` shortened from the other end by a tenth at a time until it fits `budget` tokens. */
function fitted(text: string, budget: number, tokenizer: PromptTokenizer, keep: 'start' | 'end'): string {
  while (text !== '' && tokenCount(tokenizer, text) > budget) {
    const cut = Math.ceil(text.length / 10);
    text = keep === 'end' ? text.slice(cut) : text.slice(0, text.length - cut);
  }
  return text;
}

export function buildFimPrompt(
  input: PromptInput,
  tokenizer: PromptTokenizer,
  fim: FimTemplate,
  budget: PromptBudget = defaultPromptBudget,
  order: PromptOrder = 'psm',
): FimPrompt {
  const markers = order === 'psm' ? fimMarkerCount(fim) : promptStart(fim).length;
  const available = budget.maxTokens - markers;
  if (available <= 0) throw new Error(`prompt budget of ${budget.maxTokens} tokens leaves no room for text`);
  const reach = available * MAX_CHARS_PER_TOKEN;
  const prefix = input.prefix.length > reach ? input.prefix.slice(input.prefix.length - reach) : input.prefix;
  const suffix = input.suffix.length > reach ? input.suffix.slice(0, reach) : input.suffix;
  const suffixText =
    order === 'psm' ? takeHeadLines(suffix, Math.floor(available * budget.suffixShare), tokenizer) : '';
  const suffixTokens = encodeFimSuffix(fim, (text) => tokenizer.encode(text), suffixText);

  // Whole snippets only, best first, within the context share.
  const contextBudget = Math.floor(available * budget.contextShare);
  let snippetText = '';
  let contextUsed = 0;
  for (const formatted of formatSnippets(input.snippets, input.languageId)) {
    const cost = tokenCount(tokenizer, formatted);
    if (contextUsed + cost > contextBudget) continue;
    snippetText += formatted;
    contextUsed += cost;
  }

  const prefixBudget = available - suffixTokens.length - contextUsed;
  const step = budget.prefixStartStep ?? 1;
  let prefixText = takeTailLines(prefix, prefixBudget, tokenizer, step);
  let anchorText = '';
  const anchorBudget = Math.min(Math.floor(available * (budget.anchorShare ?? 0)), Math.floor(prefixBudget / 2));
  if (anchorBudget > 0 && prefixText.length < prefix.length) {
    // The anchor is the head of the document as the provider passes it, so it stays put while the
    // cursor moves; the part near the cursor takes the rest of the prefix budget.
    prefixText = takeTailLines(prefix, prefixBudget - anchorBudget, tokenizer, step);
    anchorText = takeHeadLines(prefix.slice(0, prefix.length - prefixText.length), anchorBudget, tokenizer);
    if (anchorText !== '' && !anchorText.endsWith('\n')) anchorText = '';
  }
  // The snippets after the anchor: they change with the cursor, the anchor does not.
  const contextText = anchorText + snippetText;
  // Encoded as one string so the boundary between context and prefix tokenizes as it reads.
  let headTokens = tokenizer.encode(contextText + prefixText);
  const headRoom = available - suffixTokens.length;
  // Merges across the joins can cost a token more than the parts did: drop from the far end.
  if (headTokens.length > headRoom) headTokens = Array.prototype.slice.call(headTokens, headTokens.length - headRoom);

  const tokens =
    order === 'psm'
      ? fimPromptTokens(fim, headTokens, suffixTokens)
      : Int32Array.from([...promptStart(fim), ...Array.from(headTokens)]);
  return { tokens, prefixText, suffixText, contextText, anchorText };
}
