// While the user types on one line past a fill-in-the-middle request, the typed text is appended
// after that request's middle marker instead of building a new prompt: the model continues the
// middle it was asked for, and the engine reuses the KV cache of the whole prompt rather than
// prefilling the suffix again after every keystroke.

import type { GenerationContext } from './inflight';
import type { FimPrompt, PromptTokenizer } from './prompt';

/** The prompt of the request a run of typing started from. */
export interface TypingAnchor extends GenerationContext {
  prompt: FimPrompt;
}

/** Typed text longer than this starts a new prompt, so the prefix text is laid out afresh. */
export const MAX_CONTINUED_CHARS = 80;

/**
 * The anchor's prompt with the text typed since appended, or null when `context` does not continue
 * it on the same line (another document or model, a changed suffix, a new line, too much typed) or
 * the prompt would outgrow `maxTokens`.
 */
export function continuedPrompt(
  anchor: TypingAnchor | null,
  context: GenerationContext,
  tokenizer: PromptTokenizer,
  maxTokens: number,
): FimPrompt | null {
  if (
    !anchor ||
    anchor.uri !== context.uri ||
    anchor.modelKey !== context.modelKey ||
    anchor.suffix !== context.suffix ||
    !context.prefix.startsWith(anchor.prefix)
  )
    return null;
  const typed = context.prefix.slice(anchor.prefix.length);
  if (typed === '' || typed.length > MAX_CONTINUED_CHARS || typed.includes('\n')) return null;
  const typedTokens = Array.from(tokenizer.encode(typed));
  if (anchor.prompt.tokens.length + typedTokens.length > maxTokens) return null;
  return {
    ...anchor.prompt,
    tokens: Int32Array.from([...anchor.prompt.tokens, ...typedTokens]),
    prefixText: anchor.prompt.prefixText + typed,
  };
}
