// Held-out evaluation of the pretrained model:
// - bits per byte per language: each file scored on its own (after an <|endoftext|>, as in
//   training), in windows of T tokens with stride T/2 so every token after the first window has at
//   least T/2 tokens of context; summed −log2 p over the file's tokens / the file's UTF-8 bytes;
// - the same bytes through `xz -9 --format=raw` (no container header: the model pays none
//   either), file by file (the same information the model sees) and all files of a language
//   concatenated (cross-file repetition helps xz; a stricter floor);
// - next-line exact match: the file up to a line start as the prompt, greedy decoding until the
//   first newline, compared with the real line (trailing whitespace ignored).

import { execFileSync } from 'node:child_process';
import * as ort from 'onnxruntime-node';
import { buildForward } from '../../compute/engine/llama';
import { Generator } from '../../compute/engine/generate';
import { KvCacheSession } from '../../compute/engine/inference';
import { createSession } from '../../compute/engine/session';
import { Graph } from '../../compute/graph/graph';
import * as op from '../../compute/graph/ops';
import type { ModelConfig } from '../../model/config';
import { Rng } from '../../model/random';
import type { HostTensor } from '../../model/tensor';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { CorpusFile } from './corpus';
import { type SpecialIds, specialIds } from './data';
import { CORPUS_LANGUAGES, type CorpusLanguage } from './sources';

export interface LanguageMetrics {
  files: number;
  bytes: number;
  tokens: number;
  modelBitsPerByte: number;
  xzBitsPerByteFileByFile: number;
  xzBitsPerByteConcatenated: number;
  /** modelBitsPerByte / xzBitsPerByteFileByFile. */
  ratioToXzFileByFile: number;
  ratioToXzConcatenated: number;
  nextLine: { lines: number; exact: number; exactMatch: number };
  /** The same lines filled in the middle, as the server asks at a line's first character: PSM prompt, prefix up to the line's code, suffix from its end. Absent in metrics recorded before it existed. */
  fimLine?: { lines: number; exact: number; exactMatch: number };
}

export interface EvalOptions {
  /** Bytes of held-out files per language to score (files in a fixed order until the cap). */
  bytesPerLanguage: number;
  linesPerLanguage: number;
  seqLen: number;
  threads: number;
  log?: (line: string) => void;
}

/** −log2 p(target) for each position of windows [B, T] (targets = inputs shifted by one). */
export class Scorer {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly batch: number,
    readonly seqLen: number,
  ) {}

  static async create(
    cfg: ModelConfig,
    weights: ReadonlyMap<string, HostTensor>,
    batch: number,
    seqLen: number,
    threads: number,
  ): Promise<Scorer> {
    const g = new Graph('score');
    const fwd = buildForward(g, cfg, weights, { batch, seqLen });
    const targets = g.input('targets', 'int64', [batch, seqLen]);
    const { loss } = op.softmaxCrossEntropy(op.reshape(fwd.logits, [-1, cfg.vocabSize]), op.reshape(targets, [-1]));
    g.output(loss, 'nll'); // [B·T] natural-log NLL
    return new Scorer(await createSession(g, { threads }), batch, seqLen);
  }

  /** NLL (nats) of rows: each row gives T+1 tokens (padded rows are ignored by the caller). */
  async score(rows: Int32Array[]): Promise<Float32Array[]> {
    const { batch: B, seqLen: T } = this;
    const ids = new BigInt64Array(B * T);
    const positions = new BigInt64Array(B * T);
    const targets = new BigInt64Array(B * T);
    rows.forEach((row, b) => {
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = BigInt(row[t] ?? 0);
        targets[b * T + t] = BigInt(row[t + 1] ?? 0);
      }
    });
    for (let i = 0; i < B * T; i++) positions[i] = BigInt(i % T);
    const out = await this.session.run({
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      position_ids: new ort.Tensor('int64', positions, [B, T]),
      targets: new ort.Tensor('int64', targets, [B, T]),
    });
    const nll = out.nll.data as Float32Array;
    return rows.map((_, b) => nll.slice(b * T, (b + 1) * T));
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Windows over one file's tokens (with a leading <|endoftext|>): which targets each window scores. */
export function scoringWindows(length: number, seqLen: number): { start: number; from: number }[] {
  // Token stream s[0..length) where s[0] is the leading <|endoftext|>; targets are s[1..length).
  const windows: { start: number; from: number }[] = [];
  const stride = seqLen >> 1;
  let scoredUpTo = 1; // next target index still to score
  let start = 0;
  while (scoredUpTo < length) {
    windows.push({ start, from: scoredUpTo });
    scoredUpTo = Math.min(length, start + seqLen + 1);
    start += start === 0 ? seqLen - stride : stride;
    if (start + seqLen + 1 > length) start = Math.max(0, length - seqLen - 1);
  }
  return windows;
}

export function xzCompressedBytes(data: Uint8Array): number {
  // --format=raw: the bare LZMA2 stream, no .xz container (which costs ~60 bytes per file);
  // preset 9 is what `xz -9` uses.
  const out = execFileSync('xz', ['--format=raw', '--lzma2=preset=9', '-c'], {
    input: data,
    maxBuffer: 1 << 30,
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  return out.length;
}

/** Longer held-out files are cut (at a line end) so that one big file cannot dominate a language. */
export const MAX_EVAL_FILE_CHARS = 24_000;

export function truncateAtLine(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const cut = text.lastIndexOf('\n', maxChars - 1);
  return text.slice(0, cut > 0 ? cut + 1 : maxChars);
}

/** Held-out files per language (each cut to MAX_EVAL_FILE_CHARS), in a fixed order, until `bytes`. */
export function selectEvalFiles(files: readonly CorpusFile[], language: CorpusLanguage, bytes: number): CorpusFile[] {
  const ofLanguage = files.filter((f) => f.language === language);
  const rng = new Rng(42);
  const order = ofLanguage
    .map((f) => ({ f, k: rng.next() }))
    .sort((a, b) => a.k - b.k)
    .map((x) => x.f);
  const out: CorpusFile[] = [];
  let total = 0;
  for (const f of order) {
    if (total >= bytes) break;
    const text = truncateAtLine(f.text, MAX_EVAL_FILE_CHARS);
    out.push(text === f.text ? f : { ...f, text });
    total += Buffer.byteLength(text);
  }
  return out;
}

async function bitsForFiles(
  scorer: Scorer,
  tokenizer: Tokenizer,
  ids: SpecialIds,
  files: CorpusFile[],
): Promise<{ bits: number; tokens: number }> {
  const T = scorer.seqLen;
  type Job = { tokens: Int32Array; start: number; from: number };
  const jobs: Job[] = [];
  let tokenCount = 0;
  for (const f of files) {
    const tokens = Int32Array.from([ids.eos, ...tokenizer.encode(f.text, { specialsAsText: true })]);
    tokenCount += tokens.length - 1;
    for (const w of scoringWindows(tokens.length, T)) jobs.push({ tokens, start: w.start, from: w.from });
  }
  let nats = 0;
  for (let i = 0; i < jobs.length; i += scorer.batch) {
    const group = jobs.slice(i, i + scorer.batch);
    const rows = group.map((j) => j.tokens.subarray(j.start, Math.min(j.tokens.length, j.start + T + 1)));
    const nll = await scorer.score(rows);
    group.forEach((j, b) => {
      // Position t predicts token start+t+1; score targets from `from` to the window's end.
      const end = Math.min(j.tokens.length, j.start + T + 1);
      for (let target = j.from; target < end; target++) nats += nll[b][target - j.start - 1];
    });
  }
  return { bits: nats / Math.LN2, tokens: tokenCount };
}

/** Lines to complete: non-blank lines after the first three of a file, picked with a fixed seed. */
export function pickLines(
  files: readonly CorpusFile[],
  count: number,
  seed = 7,
): { file: CorpusFile; offset: number; line: string }[] {
  const candidates: { file: CorpusFile; offset: number; line: string }[] = [];
  for (const file of files) {
    let offset = 0;
    const lines = file.text.split('\n');
    lines.forEach((line, i) => {
      if (i >= 3 && line.trim().length > 0 && i < lines.length - 1) candidates.push({ file, offset, line });
      offset += line.length + 1;
    });
  }
  const rng = new Rng(seed);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  return candidates.slice(0, count);
}

/** Greedy completion of `prompt` until a newline (or maxTokens). */
export async function completeLine(
  generator: Generator,
  tokenizer: Tokenizer,
  promptTokens: number[],
  maxTokens = 48,
): Promise<string> {
  const result = await generator.generate(promptTokens, {
    maxTokens,
    stop: ['\n'],
    decode: (t) => tokenizer.decode(t),
    eosTokenIds: [specialIds(tokenizer).eos],
  });
  return result.text ?? '';
}

/** PSM prompt for the line at `offset`: prefix up to its code (after the indentation), suffix from its end; 3/4 of `budget` for the prefix. */
export function fimPromptAt(
  tokenizer: Tokenizer,
  ids: SpecialIds,
  text: string,
  offset: number,
  line: string,
  budget: number,
): number[] {
  const indent = line.length - line.trimStart().length;
  const prefix = tokenizer.encode(text.slice(0, offset + indent), { specialsAsText: true });
  const suffix = tokenizer.encode(text.slice(offset + line.length), { specialsAsText: true });
  const suffixBudget = Math.min(suffix.length, Math.floor((budget - 3) / 4));
  const prefixBudget = budget - 3 - suffixBudget;
  return [
    ids.prefix,
    ...prefix.slice(Math.max(0, prefix.length - prefixBudget)),
    ids.suffix,
    ...suffix.slice(0, suffixBudget),
    ids.middle,
  ];
}

/** Prompt tokens for the text before `offset`: the last `budget` tokens (with <|endoftext|> when the whole file prefix fits). */
export function promptBefore(
  tokenizer: Tokenizer,
  ids: SpecialIds,
  text: string,
  offset: number,
  budget: number,
): number[] {
  const prefix = tokenizer.encode(text.slice(0, offset), { specialsAsText: true });
  return prefix.length + 1 <= budget ? [ids.eos, ...prefix] : prefix.slice(prefix.length - budget);
}

export async function evaluateModel(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  tokenizer: Tokenizer,
  heldOut: readonly CorpusFile[],
  options: EvalOptions,
): Promise<Record<CorpusLanguage, LanguageMetrics>> {
  const log = options.log ?? (() => {});
  const ids = specialIds(tokenizer);
  const scorer = await Scorer.create(cfg, weights, 4, options.seqLen, options.threads);
  const kv = await KvCacheSession.create(cfg, weights, { threads: options.threads, maxContext: options.seqLen });
  const generator = new Generator(kv);
  const result = {} as Record<CorpusLanguage, LanguageMetrics>;
  try {
    for (const language of CORPUS_LANGUAGES) {
      const files = selectEvalFiles(heldOut, language, options.bytesPerLanguage);
      if (files.length === 0) throw new Error(`no held-out ${language} files to evaluate`);
      const buffers = files.map((f) => Buffer.from(f.text, 'utf8'));
      const bytes = buffers.reduce((n, b) => n + b.length, 0);
      const { bits, tokens } = await bitsForFiles(scorer, tokenizer, ids, files);
      const xzFiles = buffers.reduce((n, b) => n + xzCompressedBytes(b), 0);
      const xzAll = xzCompressedBytes(Buffer.concat(buffers));
      let exact = 0;
      let fimExact = 0;
      const lines = pickLines(files, options.linesPerLanguage);
      const maxNew = Math.min(48, Math.floor(options.seqLen / 4));
      for (const { file, offset, line } of lines) {
        const prompt = promptBefore(tokenizer, ids, file.text, offset, options.seqLen - maxNew);
        generator.reset();
        const completion = await completeLine(generator, tokenizer, prompt, maxNew);
        if (completion.trimEnd() === line.trimEnd()) exact++;
        generator.reset();
        const middle = await completeLine(
          generator,
          tokenizer,
          fimPromptAt(tokenizer, ids, file.text, offset, line, options.seqLen - maxNew),
          maxNew,
        );
        if (middle.trimEnd() === line.trimStart().trimEnd()) fimExact++;
      }
      const modelBpb = bits / bytes;
      const xzFileBpb = (8 * xzFiles) / bytes;
      const xzAllBpb = (8 * xzAll) / bytes;
      result[language] = {
        files: files.length,
        bytes,
        tokens,
        modelBitsPerByte: modelBpb,
        xzBitsPerByteFileByFile: xzFileBpb,
        xzBitsPerByteConcatenated: xzAllBpb,
        ratioToXzFileByFile: modelBpb / xzFileBpb,
        ratioToXzConcatenated: modelBpb / xzAllBpb,
        nextLine: { lines: lines.length, exact, exactMatch: lines.length ? exact / lines.length : 0 },
        fimLine: { lines: lines.length, exact: fimExact, exactMatch: lines.length ? fimExact / lines.length : 0 },
      };
      log(
        `eval ${language}: ${files.length} files ${bytes} bytes: model ${modelBpb.toFixed(3)} bpb, xz file-by-file ${xzFileBpb.toFixed(3)}, ` +
          `xz concatenated ${xzAllBpb.toFixed(3)}; next-line exact ${exact}/${lines.length}, FIM line exact ${fimExact}/${lines.length}`,
      );
    }
  } finally {
    await scorer.release();
    await kv.dispose();
  }
  return result;
}

/** A few completions for the model card: left-to-right and fill-in-the-middle on held-out code. */
export async function sampleCompletions(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  tokenizer: Tokenizer,
  heldOut: readonly CorpusFile[],
  options: { seqLen: number; threads: number },
): Promise<
  {
    language: CorpusLanguage;
    kind: 'next-lines' | 'fim';
    source: string;
    prompt: string;
    suffix?: string;
    completion: string;
    expected: string;
  }[]
> {
  const ids = specialIds(tokenizer);
  const kv = await KvCacheSession.create(cfg, weights, { threads: options.threads, maxContext: options.seqLen });
  const generator = new Generator(kv);
  const out: {
    language: CorpusLanguage;
    kind: 'next-lines' | 'fim';
    source: string;
    prompt: string;
    suffix?: string;
    completion: string;
    expected: string;
  }[] = [];
  try {
    for (const language of CORPUS_LANGUAGES) {
      const files = selectEvalFiles(heldOut, language, 200_000);
      const picks = pickLines(files, 40, 99).filter((p) => p.line.trim().length > 12);
      // Left to right: two lines from a point in a file.
      const lr = picks[0];
      if (lr) {
        const prompt = promptBefore(tokenizer, ids, lr.file.text, lr.offset, 200);
        generator.reset();
        const r = await generator.generate(prompt, {
          maxTokens: 40,
          decode: (t) => tokenizer.decode(t),
          eosTokenIds: [ids.eos],
          stop: ['\n\n'],
        });
        const completion = (r.text ?? '').split('\n').slice(0, 2).join('\n');
        const expected = lr.file.text.slice(lr.offset).split('\n').slice(0, 2).join('\n');
        out.push({
          language,
          kind: 'next-lines',
          source: `${lr.file.source}/${lr.file.path}`,
          prompt: tailLines(lr.file.text.slice(0, lr.offset), 6),
          completion,
          expected,
        });
      }
      // Fill in the middle: one line removed, prefix and suffix around it.
      const fim = picks[1];
      if (fim) {
        const lineEnd = fim.offset + fim.line.length;
        const prefixText = fim.file.text.slice(Math.max(0, fim.offset - 500), fim.offset);
        const suffixText = fim.file.text.slice(lineEnd, lineEnd + 300);
        const enc = (s: string) => tokenizer.encode(s, { specialsAsText: true });
        const prompt = [ids.prefix, ...enc(prefixText), ids.suffix, ...enc(suffixText), ids.middle];
        generator.reset();
        const r = await generator.generate(prompt.slice(-(options.seqLen - 48)), {
          maxTokens: 40,
          decode: (t) => tokenizer.decode(t),
          eosTokenIds: [ids.eos],
        });
        out.push({
          language,
          kind: 'fim',
          source: `${fim.file.source}/${fim.file.path}`,
          prompt: tailLines(prefixText, 4),
          suffix: suffixText.split('\n').slice(0, 3).join('\n'),
          completion: r.text ?? '',
          expected: fim.line,
        });
      }
    }
  } finally {
    await kv.dispose();
  }
  return out;
}

function tailLines(text: string, n: number): string {
  return text
    .split('\n')
    .slice(-n - 1)
    .join('\n');
}
