// Which fill-in-the-middle tokens a tokenizer carries, read from tokenizer.json and
// tokenizer_config.json without building the tokenizer (listing many models stays fast).
// A small function on its own so a family-aware template module can replace it.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type FimFamily = 'qwen' | 'starcoder' | 'codellama' | 'deepseek';

const FAMILIES: ReadonlyArray<{ family: FimFamily; names: readonly string[][] }> = [
  { family: 'qwen', names: [['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>']] },
  { family: 'starcoder', names: [['<fim_prefix>', '<fim_suffix>', '<fim_middle>']] },
  // CodeLlama keeps them in the SentencePiece vocabulary, with the word-start mark.
  {
    family: 'codellama',
    names: [
      ['▁<PRE>', '▁<SUF>', '▁<MID>'],
      ['<PRE>', '<SUF>', '<MID>'],
    ],
  },
  { family: 'deepseek', names: [['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>']] },
];

/** The families the server's prompt builder serves today (Tokenizer.fim's names). */
export const SERVED_FIM_FAMILIES: readonly FimFamily[] = ['qwen', 'starcoder'];

/** The FIM family of the tokenizer in `dir`, or null when it has none (or no tokenizer files). */
export function detectFimFamily(dir: string): FimFamily | null {
  const tokens = new Set<string>();
  let vocab: Record<string, unknown> | null = null;
  const tokenizer = readJson(path.join(dir, 'tokenizer.json'));
  if (tokenizer) {
    for (const added of asArray(tokenizer.added_tokens)) {
      const content = (added as { content?: unknown } | null)?.content;
      if (typeof content === 'string') tokens.add(content);
    }
    const model = tokenizer.model as { vocab?: unknown } | undefined;
    if (model?.vocab && typeof model.vocab === 'object' && !Array.isArray(model.vocab))
      vocab = model.vocab as Record<string, unknown>;
  }
  const config = readJson(path.join(dir, 'tokenizer_config.json'));
  const decoder = config?.added_tokens_decoder;
  if (decoder && typeof decoder === 'object') {
    for (const entry of Object.values(decoder as Record<string, unknown>)) {
      const content = (entry as { content?: unknown } | null)?.content;
      if (typeof content === 'string') tokens.add(content);
    }
  }
  const known = (name: string) => tokens.has(name) || (vocab !== null && Object.hasOwn(vocab, name));
  for (const { family, names } of FAMILIES) if (names.some((set) => set.every(known))) return family;
  return null;
}

function readJson(file: string): Record<string, unknown> | null {
  try {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    return json && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
