// Mining → tokenised dataset file, streaming: each file's examples are tokenised and written as
// the miner yields them.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { mergeMineOptions, mineRepository, type MineOptionsInput, type MineSummary } from '../mining/mine';
import type { MemoryWriter } from '../memory/file';
import { EXAMPLE_KINDS, LOSS_MASK_CONVENTION, toRanges } from './format';
import { tokenizeExample, type DatasetTokenizer } from './tokenize';
import { DatasetWriter, type WrittenDataset } from './writer';
import { sha256OfFileSync } from '../../util/sha256';

export const DEFAULT_MAX_TOKENS = 1024;
// Window size in characters per token of budget: code runs at about 3-4 characters per token
// with byte-level BPEs, so most windows fit maxTokens whole.
const CHARS_PER_TOKEN = 3;

export function windowCharsFor(maxTokens: number): number {
  return maxTokens * CHARS_PER_TOKEN;
}

export interface BuildDatasetOptions {
  tokenizer: DatasetTokenizer;
  // sha256 of the tokenizer.json the ids come from; the trainer checks it against its own.
  tokenizerSha256: string;
  // Where to write the dataset; without it tokens are only counted.
  output?: string;
  maxTokens?: number;
  mine?: MineOptionsInput;
  // Collects the training split's text for the repository memory the adapter carries.
  memory?: MemoryWriter;
}

export interface DatasetSummary {
  mining: MineSummary;
  tokens: number;
  examples: number; // token sequences (a long plain window can make several)
  droppedExamples: number; // FIM examples whose middle does not fit half of maxTokens
  train: { examples: number; tokens: number };
  heldout: { examples: number; tokens: number };
  dataset: { path: string; bytes: number; sha256: string } | null;
}

// A tokenizer file with the sha256 of its bytes.
export async function loadTokenizerFile(
  pathOrDir: string,
): Promise<{ tokenizer: Tokenizer; sha256: string; file: string }> {
  let file = pathOrDir;
  try {
    if (fs.statSync(pathOrDir).isDirectory()) file = path.join(pathOrDir, 'tokenizer.json');
  } catch {
    throw new Error(`${pathOrDir}: no such tokenizer file or folder`);
  }
  const tokenizer = await Tokenizer.load(file);
  const sha256 = sha256OfFileSync(file);
  return { tokenizer, sha256, file };
}

export async function buildDataset(folder: string, options: BuildDatasetOptions): Promise<DatasetSummary> {
  const maxTokens = options.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (!Number.isInteger(maxTokens) || maxTokens < 16)
    throw new Error(`maxTokens must be an integer >= 16, got ${maxTokens}`);
  const mineOptions = mergeMineOptions({
    ...options.mine,
    examples: { windowChars: windowCharsFor(maxTokens), ...options.mine?.examples },
  });
  const examples = mineOptions.examples;
  const { tokenizer } = options;
  const writer = options.output ? new DatasetWriter(options.output, tokenizer.vocabSize) : null;
  const counts = { train: { examples: 0, tokens: 0 }, heldout: { examples: 0, tokens: 0 } };
  let dropped = 0;
  let mining: MineSummary;
  try {
    mining = await mineRepository(folder, mineOptions, (file, fileExamples) => {
      if (file.split === 'train') options.memory?.add({ path: file.path, text: file.text });
      const fileIndex =
        writer?.addFile({
          path: file.path,
          language: file.language,
          split: file.split,
          lastCommitTime: file.lastCommitTime,
          churn: file.churn,
          ...(file.split === 'heldout' ? { changedLines: toRanges(file.changedLines) } : {}),
        }) ?? 0;
      for (const example of fileExamples) {
        const pieces = tokenizeExample(example, tokenizer, maxTokens);
        if (pieces.length === 0) dropped++;
        for (const piece of pieces) {
          counts[piece.split].examples++;
          counts[piece.split].tokens += piece.tokens.length;
          writer?.addExample(fileIndex, piece);
        }
      }
    });
  } catch (error) {
    writer?.abort();
    throw error;
  }
  let written: WrittenDataset | null = null;
  if (writer) {
    written = writer.finish({
      tokenizer: {
        sha256: options.tokenizerSha256,
        vocabSize: tokenizer.vocabSize,
        eos: tokenizer.eos,
        fim: tokenizer.fim
          ? { prefix: tokenizer.fim.prefix, suffix: tokenizer.fim.suffix, middle: tokenizer.fim.middle }
          : null,
      },
      seed: examples.seed,
      fimRate: tokenizer.fim ? examples.fimRate : 0,
      maxTokens,
      windowChars: examples.windowChars,
      lossMask: LOSS_MASK_CONVENTION,
      kinds: EXAMPLE_KINDS,
      repo: { head: mining.repo.head, folder: mining.repo.folder, shallow: mining.repo.shallow },
      split: mining.split,
      mining: {
        files: {
          tracked: mining.files.tracked,
          kept: mining.files.kept,
          excluded: mining.files.excluded as Record<string, number>,
          heldOut: mining.files.heldOut,
        },
        secretsExcluded: mining.secretsExcluded,
        languages: mining.languages,
      },
    });
  }
  return {
    mining,
    tokens: counts.train.tokens + counts.heldout.tokens,
    examples: counts.train.examples + counts.heldout.examples,
    droppedExamples: dropped,
    train: counts.train,
    heldout: counts.heldout,
    dataset: written ? { path: written.path, bytes: written.bytes, sha256: written.sha256 } : null,
  };
}
