// Which fill-in-the-middle tokens a tokenizer carries, read from tokenizer.json and
// tokenizer_config.json without building the tokenizer (listing many models stays fast).
// The family names come from the template module (tokenizer/fim.ts).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { type FimFamily, findFimTemplate } from '../tokenizer/fim';

export type { FimFamily } from '../tokenizer/fim';

/** Every family the FIM template module (tokenizer/fim.ts) lays out a prompt for. */
export const SERVED_FIM_FAMILIES: readonly FimFamily[] = ['qwen', 'starcoder', 'codellama', 'deepseek'];

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
  // The template module owns the names; only presence matters here, so any id will do.
  return findFimTemplate({ tokenId: (name) => (known(name) ? 0 : undefined) })?.family ?? null;
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
