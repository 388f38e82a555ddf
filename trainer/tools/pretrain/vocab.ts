// Chooses the tokenizer's vocabulary size by measurement: for each candidate size, train our
// byte-level BPE on the training split, measure held-out bytes per token per language, and weigh
// that against what the embedding and softmax cost per token in the chosen model body. The size
// with the fewest training FLOPs per held-out byte wins (more bytes learned per unit of compute).

import type { CorpusFile } from './corpus';
import { type CorpusLanguage, CORPUS_LANGUAGES } from './sources';
import { type TokenizerJson, trainByteLevelBpeWithStats } from '../../model/tokenizer/bpe-trainer';
import { Tokenizer } from '../../model/tokenizer/tokenizer';

export const CANDIDATE_VOCAB_SIZES = [4096, 6144, 8192, 12288, 16384] as const;

/** The parts of a model shape that set the per-token cost (vocabulary aside). */
export interface BodyShape {
  hiddenSize: number;
  numLayers: number;
  intermediateSize: number;
  /** q + k + v + o projection widths: 2·D + 2·kvHeads·headDim for GQA; 4·D without. */
  attentionWidth: number;
  seqLen: number;
}

/**
 * Matrix-product FLOPs of one training token (forward + backward ≈ 3× forward, 2 FLOPs per
 * multiply-add): weight products of the body and the lm_head (V·D), and attention's QKᵀ and PV
 * over the full T×T square as the training graph computes them.
 */
export function trainingFlopsPerToken(shape: BodyShape, vocabSize: number): number {
  const { hiddenSize: D, numLayers: L, intermediateSize: F, attentionWidth, seqLen: T } = shape;
  const bodyWeights = L * (attentionWidth * D + 3 * D * F);
  const attention = L * 2 * T * D; // QKᵀ and PV multiply-adds per token
  return 3 * 2 * (bodyWeights + vocabSize * D + attention);
}

export interface VocabMeasurement {
  vocabSize: number;
  /** Held-out bytes per token, per language and over all held-out bytes. */
  bytesPerToken: Record<CorpusLanguage | 'all', number>;
  trainBytesPerToken: number;
  embeddingParameters: number;
  flopsPerToken: number;
  /** trainingFlopsPerToken / held-out bytes per token. */
  flopsPerByte: number;
  trainSeconds: number;
}

export interface VocabChoice {
  chosen: number;
  table: VocabMeasurement[];
  tokenizer: TokenizerJson;
}

/** Held-out bytes per token of `tokenizer` over `files`, per language. */
export function measureBytesPerToken(
  tokenizer: Tokenizer,
  files: readonly CorpusFile[],
): Record<CorpusLanguage | 'all', number> {
  const bytes: Record<string, number> = { all: 0 };
  const tokens: Record<string, number> = { all: 0 };
  for (const f of files) {
    const b = Buffer.byteLength(f.text);
    const t = tokenizer.encode(f.text, { specialsAsText: true }).length;
    bytes[f.language] = (bytes[f.language] ?? 0) + b;
    tokens[f.language] = (tokens[f.language] ?? 0) + t;
    bytes.all += b;
    tokens.all += t;
  }
  const out = { all: bytes.all / Math.max(1, tokens.all) } as Record<CorpusLanguage | 'all', number>;
  for (const lang of CORPUS_LANGUAGES) out[lang] = (bytes[lang] ?? 0) / Math.max(1, tokens[lang] ?? 0);
  return out;
}

export function chooseVocabSize(
  train: readonly CorpusFile[],
  heldOut: readonly CorpusFile[],
  shape: BodyShape,
  candidates: readonly number[] = CANDIDATE_VOCAB_SIZES,
  log: (line: string) => void = () => {},
): VocabChoice {
  if (candidates.length === 0) throw new Error('chooseVocabSize: no candidate vocabulary sizes');
  const texts = train.map((f) => f.text);
  const table: VocabMeasurement[] = [];
  const tokenizers = new Map<number, TokenizerJson>();
  for (const vocabSize of candidates) {
    const { tokenizer: json, stats } = trainByteLevelBpeWithStats(texts, { vocabSize });
    tokenizers.set(vocabSize, json);
    const tokenizer = Tokenizer.fromJson(json);
    const bytesPerToken = measureBytesPerToken(tokenizer, heldOut);
    const flopsPerToken = trainingFlopsPerToken(shape, vocabSize);
    const row: VocabMeasurement = {
      vocabSize,
      bytesPerToken,
      trainBytesPerToken: stats.inputBytes / stats.corpusTokens,
      embeddingParameters: vocabSize * shape.hiddenSize,
      flopsPerToken,
      flopsPerByte: flopsPerToken / bytesPerToken.all,
      trainSeconds: stats.seconds,
    };
    table.push(row);
    log(
      `vocab ${vocabSize}: held-out ${bytesPerToken.all.toFixed(3)} bytes/token (ts ${bytesPerToken.typescript.toFixed(2)}, js ${bytesPerToken.javascript.toFixed(2)}, py ${bytesPerToken.python.toFixed(2)}), ${(row.flopsPerByte / 1e6).toFixed(2)} MFLOP/byte`,
    );
  }
  const best = table.reduce((a, b) => (b.flopsPerByte < a.flopsPerByte ? b : a));
  return { chosen: best.vocabSize, table, tokenizer: tokenizers.get(best.vocabSize)! };
}
