import * as ort from 'onnxruntime-node';
import { serializeModel } from '../../compute/graph/onnx';
import { loadCheckpoint } from '../../model/checkpoint';
import type { ModelConfig } from '../../model/config';
import { openSession } from '../../compute/runtime/session';
import type { HostTensor } from '../../model/tensor';
import { KvCacheSession } from '../../compute/engine/inference';
import type { AdapterMessage } from '../../compute/engine/generation-handlers';
import type { LoraAdapter } from '../../compute/engine/weights';
import { buildScoreGraph, SCORE_IO, scoreLoraFeeds } from './score-graph';
import { toOrtTensor } from '../../compute/runtime/session';

// Evaluation handlers, run inside the engine worker (spread into it by trainer/worker.ts):
// a scoring session (per-token NLL of token rows) and a KV-cache decoder for greedy line
// completion, for one set of weights (a base with LoRA inputs, or a full fine-tune). Weights load
// here from a folder, so they never cross the thread boundary.

export type EvalWeightSource = { checkpointDir: string } | { config: ModelConfig; weights: Record<string, HostTensor> };

export interface EvalCreateOptions {
  /** Tokens per scoring row (inputs; each row holds T + 1 tokens with its targets). */
  seqLen: number;
  /** Rows per session run. Default 4. */
  rowsPerRun?: number;
  /** Longest completion prompt + generated tokens. */
  maxContext: number;
  /** LoRA inputs in both sessions (to evaluate adapters on this base). */
  loraInputs: boolean;
  /** The tokenizer's vocabulary size: scores normalise and greedy decoding picks within it. */
  vocabLimit?: number;
  threads?: number;
}

/** One token sequence to score: targets at positions i ≥ max(1, lossStart) count. */
export interface ScoreSequence {
  tokens: Int32Array | number[];
  lossStart: number;
}

export interface CompletionItem {
  prompt: Int32Array | number[];
  maxTokens: number;
}

interface Evaluator {
  config: ModelConfig;
  seqLen: number;
  rowsPerRun: number;
  score: ort.InferenceSession;
  decoder: KvCacheSession;
  loraFeeds: Record<string, ort.Tensor>;
  loraInputs: boolean;
  vocabLimit: number;
}

const evaluators = new Map<number, Evaluator>();
let nextEvaluatorId = 1;

function evaluatorById(id: number): Evaluator {
  const evaluator = evaluators.get(id);
  if (!evaluator) throw new Error(`no evaluator ${id} (released or never created)`);
  return evaluator;
}

function toAdapter(message: AdapterMessage): LoraAdapter {
  return { scaling: message.scaling, modules: new Map(Object.entries(message.modules)) };
}

function ortFeeds(feeds: Record<string, HostTensor>): Record<string, ort.Tensor> {
  return Object.fromEntries(Object.entries(feeds).map(([name, tensor]) => [name, toOrtTensor(tensor)]));
}

export const evalHandlers = {
  async evalCreate(source: EvalWeightSource, options: EvalCreateOptions) {
    const started = performance.now();
    let config: ModelConfig;
    let weights: ReadonlyMap<string, HostTensor>;
    let sha256: string | null = null;
    if ('checkpointDir' in source) {
      const checkpoint = await loadCheckpoint(source.checkpointDir);
      ({ config, weights, sha256 } = checkpoint);
    } else {
      config = source.config;
      weights = new Map(Object.entries(source.weights));
    }
    const vocabLimit = Math.min(options.vocabLimit ?? config.vocabSize, config.vocabSize);
    if (options.seqLen + 1 > config.maxPositionEmbeddings) {
      throw new Error(
        `evaluation rows of ${options.seqLen + 1} tokens exceed the model's ${config.maxPositionEmbeddings} positions`,
      );
    }
    const score = await openSession(
      serializeModel(
        buildScoreGraph(config, weights, { seqLen: options.seqLen, loraInputs: options.loraInputs, vocabLimit }),
      ),
      {
        threads: options.threads,
      },
    );
    const decoder = await KvCacheSession.create(config, weights, {
      maxContext: Math.min(config.maxPositionEmbeddings, options.maxContext),
      loraInputs: options.loraInputs,
      threads: options.threads,
    });
    const id = nextEvaluatorId++;
    evaluators.set(id, {
      config,
      seqLen: options.seqLen,
      rowsPerRun: options.rowsPerRun ?? 4,
      score,
      decoder,
      loraFeeds: options.loraInputs ? ortFeeds(scoreLoraFeeds(config, null)) : {},
      loraInputs: options.loraInputs,
      vocabLimit,
    });
    return { id, config, sha256, setupSeconds: (performance.now() - started) / 1000 };
  },

  /** Sets the adapter both sessions apply (null = the base alone). */
  async evalSetAdapter(id: number, adapter: AdapterMessage | null) {
    const evaluator = evaluatorById(id);
    if (!evaluator.loraInputs) {
      if (adapter === null) return;
      throw new Error('this evaluator was created without LoRA inputs (a full fine-tune); it cannot apply an adapter');
    }
    const lora = adapter ? toAdapter(adapter) : null;
    evaluator.loraFeeds = ortFeeds(scoreLoraFeeds(evaluator.config, lora));
    evaluator.decoder.setAdapter(lora ?? undefined);
    evaluator.decoder.truncate(0);
  },

  /**
   * Σ NLL (nats) and the number of scored targets per sequence. A sequence longer than T + 1 is
   * scored in windows of T + 1 tokens that overlap by one (each target once; a window's first
   * targets see less context).
   */
  async evalScore(id: number, sequences: ScoreSequence[]): Promise<{ nll: Float64Array; counts: Int32Array }> {
    const evaluator = evaluatorById(id);
    const T = evaluator.seqLen;
    const vocab = evaluator.vocabLimit;
    type Row = { sequence: number; tokens: ArrayLike<number>; from: number; firstCounted: number };
    const rows: Row[] = [];
    sequences.forEach((sequence, index) => {
      const length = sequence.tokens.length;
      for (let from = 0; from + 1 < length; from += T) {
        const tokens = Array.prototype.slice.call(sequence.tokens, from, Math.min(length, from + T + 1)) as number[];
        rows.push({ sequence: index, tokens, from, firstCounted: Math.max(1, sequence.lossStart) });
      }
    });
    const nll = new Float64Array(sequences.length);
    const counts = new Int32Array(sequences.length);
    for (let first = 0; first < rows.length; first += evaluator.rowsPerRun) {
      const batch = rows.slice(first, first + evaluator.rowsPerRun);
      const B = batch.length;
      const inputIds = new BigInt64Array(B * T);
      const targets = new BigInt64Array(B * T);
      const positions = new BigInt64Array(B * T);
      const counted = new Uint8Array(B * T);
      batch.forEach((row, b) => {
        for (let t = 0; t < T; t++) {
          positions[b * T + t] = BigInt(t);
          if (t + 1 >= row.tokens.length) continue;
          const input = row.tokens[t];
          const target = row.tokens[t + 1];
          if (!(input >= 0 && input < vocab && target >= 0 && target < vocab))
            throw new Error(`token id out of range [0, ${vocab}) in sequence ${row.sequence}`);
          inputIds[b * T + t] = BigInt(input);
          targets[b * T + t] = BigInt(target);
          if (row.from + t + 1 >= row.firstCounted) counted[b * T + t] = 1;
        }
      });
      const results = await evaluator.score.run({
        input_ids: new ort.Tensor('int64', inputIds, [B, T]),
        position_ids: new ort.Tensor('int64', positions, [B, T]),
        [SCORE_IO.targets]: new ort.Tensor('int64', targets, [B, T]),
        ...evaluator.loraFeeds,
      });
      const values = results[SCORE_IO.nll].data as Float32Array; // [B, T]
      batch.forEach((row, b) => {
        for (let t = 0; t < T; t++) {
          if (!counted[b * T + t]) continue;
          nll[row.sequence] += values[b * T + t];
          counts[row.sequence]++;
        }
      });
    }
    return { nll, counts };
  },

  /**
   * Greedy completion of each prompt: stops before an id in `endIds` (e.g. eos), after an id in
   * `stopAfterIds` (tokens holding a newline: the caller cuts the text there), or at maxTokens.
   */
  async evalComplete(
    id: number,
    items: CompletionItem[],
    endIds: number[],
    stopAfterIds: number[],
  ): Promise<number[][]> {
    const evaluator = evaluatorById(id);
    const decoder = evaluator.decoder;
    const end = new Set(endIds);
    const stopAfter = new Set(stopAfterIds);
    const outputs: number[][] = [];
    for (const item of items) {
      decoder.truncate(0);
      const room = decoder.maxContext - item.prompt.length;
      if (room < 1)
        throw new Error(
          `completion prompt of ${item.prompt.length} tokens leaves no room in a context of ${decoder.maxContext}`,
        );
      const generated: number[] = [];
      let logits = await decoder.append(item.prompt);
      const limit = Math.min(item.maxTokens, room);
      while (generated.length < limit) {
        const next = argmax(logits, evaluator.vocabLimit);
        if (end.has(next)) break;
        generated.push(next);
        if (stopAfter.has(next) || generated.length === limit) break;
        logits = await decoder.append([next]);
      }
      outputs.push(generated);
    }
    decoder.truncate(0);
    return outputs;
  },

  async evalRelease(id: number) {
    const evaluator = evaluatorById(id);
    evaluators.delete(id);
    await evaluator.score.release();
    await evaluator.decoder.dispose();
  },
};

type EvalHandlers = typeof evalHandlers;

// Registers these methods with the engine worker's typed client (see compute/runtime/handlers.ts).
declare module '../../compute/runtime/handlers' {
  interface WorkerHandlers extends EvalHandlers {}
}

function argmax(values: Float32Array, limit: number): number {
  let best = 0;
  for (let i = 1; i < limit; i++) if (values[i] > values[best]) best = i;
  return best;
}
