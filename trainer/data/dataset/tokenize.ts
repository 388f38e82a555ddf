// Text examples → token sequences, in the order the completion server prompts the model:
//   FIM (PSM): the family's template (model/tokenizer/fim.ts), e.g.
//              <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle <eos>, loss on middle + eos
//   plain:     text (+ <eos> when the window ends its file), loss everywhere
// Repository text is encoded with special-token strings as plain text, so a file that contains
// "<|endoftext|>" cannot forge a control token.

import { type FimTemplate, encodeFimSuffix, fimMarkerCount, fimPromptTokens } from '../../model/tokenizer/fim';
import type { Example } from '../mining/examples';
import type { DatasetExampleKind, DatasetSplit } from './format';
import { FLAG_CONTINUATION, FLAG_ENDS_WITH_EOS } from './format';

// What the dataset needs from a tokenizer (trainer/model/tokenizer's Tokenizer satisfies it).
export interface DatasetTokenizer {
  encode(text: string, options?: { specialsAsText?: boolean }): number[];
  readonly vocabSize: number;
  readonly eos: number | null;
  readonly fim: FimTemplate | null;
}

export interface TokenizedExample {
  tokens: Int32Array;
  lossStart: number;
  kind: DatasetExampleKind;
  split: DatasetSplit;
  flags: number;
}

// One example as one or more token sequences of at most maxTokens. A FIM example keeps its whole
// middle and trims the prefix from the left and the suffix from the right; one whose middle
// cannot fit in half the budget is dropped (returns []). A plain window longer than maxTokens is
// cut into consecutive pieces. Without FIM tokens a FIM example becomes plain text.
export function tokenizeExample(example: Example, tokenizer: DatasetTokenizer, maxTokens: number): TokenizedExample[] {
  const encode = (text: string) => (text.length === 0 ? [] : tokenizer.encode(text, { specialsAsText: true }));
  const eos = tokenizer.eos;
  if (example.kind === 'plain' || !tokenizer.fim) {
    const text = example.kind === 'plain' ? example.text : example.prefix + example.middle + example.suffix;
    const ids = encode(text);
    const endsWithEos = eos !== null && (example.kind === 'plain' ? example.endsFile : false);
    if (endsWithEos) ids.push(eos);
    const pieces: TokenizedExample[] = [];
    for (let start = 0; start < ids.length; start += maxTokens) {
      const end = Math.min(ids.length, start + maxTokens);
      let flags = start > 0 ? FLAG_CONTINUATION : 0;
      if (endsWithEos && end === ids.length) flags |= FLAG_ENDS_WITH_EOS;
      pieces.push({
        tokens: Int32Array.from(ids.slice(start, end)),
        lossStart: 0,
        kind: 'plain',
        split: example.split,
        flags,
      });
    }
    return pieces;
  }
  const fim = tokenizer.fim;
  const middle = encode(example.middle);
  const end = fim.end ?? eos;
  if (end !== null) middle.push(end);
  const budget = maxTokens - fimMarkerCount(fim) - middle.length;
  if (middle.length === 0 || middle.length > Math.floor(maxTokens / 2)) return [];
  let prefix = encode(example.prefix);
  let suffix = encodeFimSuffix(fim, encode, example.suffix);
  if (prefix.length + suffix.length > budget) {
    // The suffix keeps at least a third of the budget when it is that long; the prefix the rest.
    const suffixKeep = Math.min(suffix.length, Math.max(Math.floor(budget / 3), budget - prefix.length));
    const prefixKeep = Math.min(prefix.length, budget - suffixKeep);
    prefix = prefix.slice(prefix.length - prefixKeep);
    suffix = suffix.slice(0, suffixKeep);
  }
  const prompt = fimPromptTokens(fim, prefix, suffix);
  const tokens = new Int32Array(prompt.length + middle.length);
  tokens.set(prompt);
  const lossStart = prompt.length;
  tokens.set(middle, lossStart);
  return [
    {
      tokens,
      lossStart,
      kind: example.kind,
      split: example.split,
      flags: end !== null ? FLAG_ENDS_WITH_EOS : 0,
    },
  ];
}
