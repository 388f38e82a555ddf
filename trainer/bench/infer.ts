import * as ort from 'onnxruntime-node';
import { ModelConfig, parseModelConfig } from '../model/config';
import { randomCheckpointWeights } from '../model/checkpoint';
import { buildWeightMatmulGraph, KvCacheSession } from '../engine/inference';
import { createSession } from '../engine/session';
import { Precision } from '../engine/weights';
import { Rng } from '../model/random';

// `idiom bench infer`: prefill and decode speed of the inference graph on the reference config,
// and in the same process the time of one token's weight MatMuls alone (the floor for decode).

export interface BenchInferOptions {
  threads?: number;
  precision?: Precision;
  promptTokens?: number;
  decodeTokens?: number;
  /** Repeats of the prefill (the median is reported). */
  prefillRepeats?: number;
  config?: ModelConfig;
  log?: (line: string) => void;
}

/** The reference shape of issue 2: d 512, 8 layers, 8 heads, SwiGLU 1376, vocab 8192. */
export function referenceConfig(): ModelConfig {
  return parseModelConfig({
    model_type: 'llama',
    hidden_size: 512,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 8,
    intermediate_size: 1376,
    vocab_size: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 2048,
    tie_word_embeddings: false,
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));

export async function benchInfer(options: BenchInferOptions = {}): Promise<Record<string, unknown>> {
  const cfg = options.config ?? referenceConfig();
  const threads = options.threads ?? 2;
  const precision = options.precision ?? 'int8';
  const promptTokens = options.promptTokens ?? 256;
  const decodeTokens = options.decodeTokens ?? 64;
  const log = options.log ?? (() => {});
  const weights = randomCheckpointWeights(cfg, 1);
  const rng = new Rng(2);
  const prompt = Array.from({ length: promptTokens }, () => rng.int(cfg.vocabSize));

  log(`bench infer: building the decoder (${precision}, ${threads} threads)`);
  const session = await KvCacheSession.create(cfg, weights, { precision, threads });

  // Warm-up: first touches of the arena and the cache pages are slow on these machines.
  await session.append(prompt);
  for (let i = 0; i < 8; i++) await session.append([i]);

  const prefillTimes: number[] = [];
  let next = 0;
  for (let r = 0; r < (options.prefillRepeats ?? 3); r++) {
    session.truncate(0);
    const start = performance.now();
    next = argmax(await session.append(prompt));
    prefillTimes.push(performance.now() - start);
  }
  const stepTimes: number[] = [];
  for (let i = 0; i < decodeTokens; i++) {
    const start = performance.now();
    const logits = await session.append([next]);
    next = argmax(logits);
    stepTimes.push(performance.now() - start);
  }
  await session.dispose();

  log('bench infer: weight MatMuls alone');
  const matmuls = await createSession(buildWeightMatmulGraph(cfg, weights, precision), { threads });
  const feeds: Record<string, ort.Tensor> = {};
  const fetches: Record<string, ort.Tensor> = {};
  for (const name of matmuls.inputNames) {
    const features = Number(name.slice(1));
    feeds[name] = new ort.Tensor('float32', rng.fillNormal(new Float32Array(features)), [1, features]);
  }
  for (const [i, name] of matmuls.outputNames.entries()) {
    const dims = (matmuls.outputMetadata[i] as { shape: readonly (number | string)[] }).shape.map(Number);
    fetches[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
  }
  for (let i = 0; i < 8; i++) await matmuls.run(feeds, fetches);
  const matmulTimes: number[] = [];
  for (let i = 0; i < decodeTokens; i++) {
    const start = performance.now();
    await matmuls.run(feeds, fetches);
    matmulTimes.push(performance.now() - start);
  }
  await matmuls.release();

  const decodeMsPerToken = stepTimes.reduce((a, b) => a + b, 0) / stepTimes.length;
  const weightMatmulMsPerToken = matmulTimes.reduce((a, b) => a + b, 0) / matmulTimes.length;
  return {
    prefillMs: round(median(prefillTimes)),
    decodeMsPerToken: round(decodeMsPerToken),
    decodeP50MsPerToken: round(median(stepTimes)),
    weightMatmulMsPerToken: round(weightMatmulMsPerToken),
    weightMatmulP50MsPerToken: round(median(matmulTimes)),
    ratio: round(decodeMsPerToken / weightMatmulMsPerToken),
    completionP50Ms: null,
    completionP95Ms: null,
    precision,
    threads,
    promptTokens,
    decodeTokens,
    config: { hiddenSize: cfg.hiddenSize, numLayers: cfg.numLayers, numHeads: cfg.numHeads, numKvHeads: cfg.numKvHeads, intermediateSize: cfg.intermediateSize, vocabSize: cfg.vocabSize },
  };
}
