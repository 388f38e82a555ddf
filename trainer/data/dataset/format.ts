// The Idiom dataset file (.idiomds): tokenised examples that the miner writes and the trainers
// (TypeScript, and the PyTorch backend) read. Layout and conventions: FORMAT.md next to this file.
//
//   [0, 32)     preamble: "IDIOMDS1", u64 header offset, u64 header length, u64 reserved (0)
//   [32, …)     tokens: int32 little-endian, every example's ids back to back
//   (8-aligned) index: one 24-byte record per example
//   (at end)    header: UTF-8 JSON

import type { MineSummary } from '../mining/mine';

export const DATASET_MAGIC = 'IDIOMDS1';
export const DATASET_VERSION = 1;
export const PREAMBLE_BYTES = 32;
export const RECORD_BYTES = 24;

export const EXAMPLE_KINDS = ['plain', 'fim-block', 'fim-line-rest', 'fim-line-part'] as const;
export type DatasetExampleKind = (typeof EXAMPLE_KINDS)[number];
export const SPLITS = ['train', 'heldout'] as const;
export type DatasetSplit = (typeof SPLITS)[number];

// Record flags.
export const FLAG_ENDS_WITH_EOS = 1;
// A piece of a plain window longer than maxTokens (not the window's first piece).
export const FLAG_CONTINUATION = 2;

export interface ExampleRecord {
  // Offset of the first token, in tokens from the start of the token section.
  tokenStart: number;
  length: number;
  // Targets are positions i with i >= max(1, lossStart): plain 0, FIM the first middle token.
  lossStart: number;
  // Index into header.files.
  file: number;
  kind: DatasetExampleKind;
  split: DatasetSplit;
  flags: number;
}

export interface DatasetFileEntry {
  path: string;
  language: string;
  split: DatasetSplit;
  lastCommitTime: number | null;
  churn: number;
  // Held-out files: changed lines as inclusive 1-based [first, last] ranges.
  changedLines?: [number, number][];
}

export interface DatasetHeader {
  format: 'idiom-dataset';
  version: number;
  tokenizer: {
    sha256: string;
    vocabSize: number;
    eos: number | null;
    fim: { prefix: number; suffix: number; middle: number } | null;
  };
  // How examples were made: enough to make them again.
  seed: number;
  fimRate: number;
  maxTokens: number;
  windowChars: number;
  lossMask: string;
  kinds: readonly string[];
  repo: { head: string | null; folder: string; shallow: boolean };
  split: MineSummary['split'];
  counts: {
    examples: number;
    tokens: number;
    train: { examples: number; tokens: number };
    heldout: { examples: number; tokens: number };
    byKind: Record<string, number>;
  };
  sections: {
    tokens: { offset: number; count: number; dtype: 'int32le' };
    index: { offset: number; count: number; recordBytes: number };
  };
  mining: {
    files: { tracked: number; kept: number; excluded: Record<string, number>; heldOut: number };
    secretsExcluded: number;
    languages: Record<string, number>;
  };
  files: DatasetFileEntry[];
}

export const LOSS_MASK_CONVENTION =
  'position i (1 <= i < length) is a training target iff i >= lossStart; plain examples have lossStart 0, ' +
  'FIM examples the index of the first middle token, so loss covers the middle and the closing eos';

export function encodeRecord(record: ExampleRecord, into: Buffer, at: number): void {
  into.writeBigUInt64LE(BigInt(record.tokenStart), at);
  into.writeUInt32LE(record.length, at + 8);
  into.writeUInt32LE(record.lossStart, at + 12);
  into.writeUInt32LE(record.file, at + 16);
  into.writeUInt8(EXAMPLE_KINDS.indexOf(record.kind), at + 20);
  into.writeUInt8(SPLITS.indexOf(record.split), at + 21);
  into.writeUInt8(record.flags, at + 22);
  into.writeUInt8(0, at + 23);
}

export function decodeRecord(from: Buffer, at: number): ExampleRecord {
  const kind = EXAMPLE_KINDS[from.readUInt8(at + 20)];
  const split = SPLITS[from.readUInt8(at + 21)];
  if (kind === undefined || split === undefined)
    throw new Error('corrupt dataset: unknown example kind or split in the index');
  return {
    tokenStart: Number(from.readBigUInt64LE(at)),
    length: from.readUInt32LE(at + 8),
    lossStart: from.readUInt32LE(at + 12),
    file: from.readUInt32LE(at + 16),
    kind,
    split,
    flags: from.readUInt8(at + 22),
  };
}

// Inclusive [first, last] ranges of sorted line numbers.
export function toRanges(lines: readonly number[]): [number, number][] {
  const ranges: [number, number][] = [];
  for (const line of lines) {
    const last = ranges[ranges.length - 1];
    if (last && line === last[1] + 1) last[1] = line;
    else if (!last || line > last[1]) ranges.push([line, line]);
  }
  return ranges;
}
