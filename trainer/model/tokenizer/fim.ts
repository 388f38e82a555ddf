// The fill-in-the-middle template of a model family, found from its tokenizer's special tokens,
// and the one place that lays out a PSM prompt: training examples, held-out prompts and the
// completion server all build their FIM token sequences here.
//
//   Qwen / StarCoder: <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>  (StarCoder: <fim_prefix> …)
//   CodeLlama:        <s>▁<PRE> P▁<SUF>S▁<MID>, middle ended by ▁<EOT> (P keeps SentencePiece's
//                     leading space, S drops it)
//   DeepSeek-Coder:   <｜begin▁of▁sentence｜><｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>

import * as fs from 'node:fs';
import * as path from 'node:path';

export type FimFamily = 'qwen' | 'starcoder' | 'codellama' | 'deepseek';

export interface FimTokens {
  prefix: number;
  suffix: number;
  middle: number;
}

export interface FimTemplate extends FimTokens {
  family: FimFamily;
  /** Sent first (CodeLlama and DeepSeek-Coder are trained with BOS ahead of the prefix marker). */
  bos: number | null;
  /** Ends a middle where the family has its own token (CodeLlama's <EOT>); else end of text does. */
  end: number | null;
}

/** What detection needs from a tokenizer (the trainer's Tokenizer satisfies it). */
export interface FimVocabulary {
  tokenId(name: string): number | undefined;
}

interface FamilyNames {
  family: FimFamily;
  prefix: readonly string[];
  suffix: readonly string[];
  middle: readonly string[];
  bos: readonly string[];
  end?: readonly string[];
}

/** Special-token names per family, in order of preference (Qwen2.5-Coder style first). */
const FAMILIES: readonly FamilyNames[] = [
  { family: 'qwen', prefix: ['<|fim_prefix|>'], suffix: ['<|fim_suffix|>'], middle: ['<|fim_middle|>'], bos: [] },
  { family: 'starcoder', prefix: ['<fim_prefix>'], suffix: ['<fim_suffix>'], middle: ['<fim_middle>'], bos: [] },
  {
    family: 'codellama',
    // The HF CodeLlama vocabulary spells them with SentencePiece's space mark; a converted one may not.
    prefix: ['▁<PRE>', '<PRE>'],
    suffix: ['▁<SUF>', '<SUF>'],
    middle: ['▁<MID>', '<MID>'],
    bos: ['<s>'],
    end: ['▁<EOT>', '<EOT>'],
  },
  {
    family: 'deepseek',
    prefix: ['<｜fim▁begin｜>'],
    suffix: ['<｜fim▁hole｜>'],
    middle: ['<｜fim▁end｜>'],
    bos: ['<｜begin▁of▁sentence｜>'],
  },
];

function firstId(vocabulary: FimVocabulary, names: readonly string[]): number | undefined {
  for (const name of names) {
    const id = vocabulary.tokenId(name);
    if (id !== undefined) return id;
  }
  return undefined;
}

/** The first family whose three FIM tokens the vocabulary holds; null when none does. */
export function findFimTemplate(vocabulary: FimVocabulary): FimTemplate | null {
  for (const names of FAMILIES) {
    const prefix = firstId(vocabulary, names.prefix);
    const suffix = firstId(vocabulary, names.suffix);
    const middle = firstId(vocabulary, names.middle);
    if (prefix === undefined || suffix === undefined || middle === undefined) continue;
    const bos = firstId(vocabulary, names.bos) ?? null;
    return { family: names.family, prefix, suffix, middle, bos, end: firstId(vocabulary, names.end ?? []) ?? null };
  }
  return null;
}

/** Tokens a PSM prompt adds around the text: the three markers and BOS where the family has one. */
export function fimMarkerCount(template: FimTemplate): number {
  return template.bos === null ? 3 : 4;
}

/** The tokens that open a prompt of either order (BOS where the family has one). */
export function promptStart(template: FimTemplate): number[] {
  return template.bos === null ? [] : [template.bos];
}

type Encode = (text: string) => ArrayLike<number>;

/**
 * The suffix as the family's template encodes it. CodeLlama's encodes it without the space a
 * SentencePiece tokenizer puts before a text: encode("\n" + S) minus the ids of encode("\n")
 * (CodeLlama's own trick with "☺"), when those ids are indeed its start.
 */
export function encodeFimSuffix(template: FimTemplate, encode: Encode, text: string): number[] {
  if (text === '') return [];
  const plain = Array.from(encode(text));
  if (template.family !== 'codellama') return plain;
  const head = Array.from(encode('\n'));
  const joined = Array.from(encode(`\n${text}`));
  if (head.length === 0 || joined.length <= head.length || head.some((id, i) => joined[i] !== id)) return plain;
  return joined.slice(head.length);
}

/** [BOS] prefix-marker prefix suffix-marker suffix middle-marker: the PSM prompt, ready to decode the middle. */
export function fimPromptTokens(
  template: FimTemplate,
  prefix: ArrayLike<number>,
  suffix: ArrayLike<number>,
): Int32Array {
  const start = promptStart(template);
  const tokens = new Int32Array(start.length + 3 + prefix.length + suffix.length);
  let at = 0;
  for (const id of start) tokens[at++] = id;
  tokens[at++] = template.prefix;
  tokens.set(prefix, at);
  at += prefix.length;
  tokens[at++] = template.suffix;
  tokens.set(suffix, at);
  at += suffix.length;
  tokens[at++] = template.middle;
  return tokens;
}

// ---- which checkpoints may complete code --------------------------------------------------------

export type CompletionSupport = { template: FimTemplate; problem: null } | { template: null; problem: string };

/** A name that says the checkpoint is tuned for chat rather than for filling in code. */
const CHAT_NAME = /(^|[-_./\s])(instruct|chat)($|[-_./\s])/i;

/**
 * Whether the checkpoint in `dir` can serve inline completion: it needs FIM tokens, and a
 * chat/instruct checkpoint (its name says so, or it has a chat template and no FIM tokens)
 * fills in the middle poorly even when its vocabulary has the tokens, so it is refused too.
 * Review mode scores text and uses the model either way.
 */
export function completionSupport(dir: string, vocabulary: FimVocabulary): CompletionSupport {
  const template = findFimTemplate(vocabulary);
  const name = checkpointNames(dir).find((candidate) => CHAT_NAME.test(candidate));
  const advice = 'inline completion needs a base (FIM) model such as Qwen2.5-Coder; review mode can still use this one';
  if (name !== undefined) {
    return { template: null, problem: `${name} is a chat/instruct checkpoint: ${advice}` };
  }
  if (template === null) {
    const chat = hasChatTemplate(dir) ? ' (a chat model: tokenizer_config.json has a chat_template)' : '';
    return {
      template: null,
      problem: `${path.join(dir, 'tokenizer.json')} has no fill-in-the-middle tokens${chat}: ${advice}`,
    };
  }
  return { template, problem: null };
}

/**
 * The names a checkpoint goes by: its folder, the repository of a Hugging Face cache snapshot
 * (models--org--name/snapshots/<sha>), and the `_name_or_path` its config files record.
 */
function checkpointNames(dir: string): string[] {
  const names = [path.basename(path.resolve(dir))];
  for (const part of path.resolve(dir).split(path.sep)) {
    if (part.startsWith('models--')) names.push(part.slice('models--'.length).split('--').join('/'));
  }
  for (const file of ['config.json', 'tokenizer_config.json']) {
    const json = readJsonObject(path.join(dir, file));
    for (const key of ['_name_or_path', 'name_or_path']) {
      if (typeof json?.[key] === 'string' && json[key] !== '') names.push(json[key] as string);
    }
  }
  return names;
}

function hasChatTemplate(dir: string): boolean {
  const json = readJsonObject(path.join(dir, 'tokenizer_config.json'));
  return json?.chat_template !== undefined && json.chat_template !== null;
}

/** The file's JSON object, or null when it is absent or not an object (detection is best effort). */
function readJsonObject(file: string): Record<string, unknown> | null {
  try {
    const json: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return json !== null && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
