// The serving model's check on a recalled line: recall proposes a line written elsewhere without
// decoding; the model (base + adapter) then scores that line after the prompt it would decode
// from, and a line it finds unlikely is hidden (the model decodes instead). Long wrong lines score
// low as a whole; short wrong ones score low per token, so both are checked. `idiom bench quality`
// calibrates the defaults.

import type { LoadedModel } from '../model/host';
import { defaultSettings } from '../protocol';

export interface RecallCheck {
  /** Natural-log probability the line (with its end) needs as a whole; null: not checked. */
  minLogprob: number | null;
  /** Mean log probability its tokens need; null: not checked. */
  minTokenLogprob: number | null;
}

export const defaultRecallCheck: RecallCheck = {
  minLogprob: defaultSettings.completion.recallMinLogprob ?? null,
  minTokenLogprob: defaultSettings.completion.recallMinTokenLogprob ?? null,
};

/** A threshold setting: null turns it off; absent or not a log probability, the default. */
export function recallThreshold(setting: unknown, fallback: number | null): number | null {
  if (setting === null) return null;
  return typeof setting === 'number' && Number.isFinite(setting) && setting <= 0 ? setting : fallback;
}

/** Whether the check is on at all (then each recalled line costs the model a forward pass). */
export function recallCheckActive(check: RecallCheck): boolean {
  return check.minLogprob !== null || check.minTokenLogprob !== null;
}

/** The log probabilities the check compares: of the first line of `text` and its line end. */
export async function scoreRecalledLine(
  model: Pick<LoadedModel, 'scoreContinuation' | 'tokenizer' | 'contextLength'>,
  prompt: Int32Array,
  text: string,
): Promise<{ logprob: number; tokenLogprob: number }> {
  const newline = text.indexOf('\n');
  const line = newline < 0 ? text : text.slice(0, newline);
  // The prompt always fits; a line past the context is scored as far as it fits.
  const tokens = model.tokenizer.encode(`${line}\n`).slice(0, Math.max(1, model.contextLength - prompt.length + 1));
  const { logprobs } = await model.scoreContinuation(prompt, tokens);
  const logprob = logprobs.reduce((sum, x) => sum + x, 0);
  return { logprob, tokenLogprob: logprob / logprobs.length };
}

/** Whether a line with these scores passes `check`. */
export function passesRecallCheck(score: { logprob: number; tokenLogprob: number }, check: RecallCheck): boolean {
  return (
    (check.minLogprob === null || score.logprob >= check.minLogprob) &&
    (check.minTokenLogprob === null || score.tokenLogprob >= check.minTokenLogprob)
  );
}
