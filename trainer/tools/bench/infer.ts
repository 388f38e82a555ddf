import * as fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import type { ModelConfig } from '../../model/config';
import { openCheckpoint, randomLazyWeights } from '../../model/lazy-weights';
import { Generator } from '../../compute/engine/generate';
import { buildWeightMatmulGraph, KvCacheSession } from '../../compute/engine/inference';
import { argmax } from '../../compute/engine/sampling';
import { createSession } from '../../compute/engine/session';
import type { Precision } from '../../compute/engine/weights';
import { Rng } from '../../model/random';
import type { HostTensor } from '../../model/tensor';
import { newestProfile } from './profile-summary';
import { median, referenceConfig } from './reference';
import { round } from '../../util/round';

// `idiom bench infer`: prefill and decode speed of the inference graph on the reference config,
// the time of one token's weight MatMuls alone (the floor for decode) measured in the same run,
// and the latency of typical inline completions.
//
// Decode steps and weight-MatMul runs are interleaved one to one, so both see the same machine
// load (these machines are shared) and the same cache state (each run follows the other
// session's run, so neither keeps its weights in the CPU caches).
//
// Completion latency: Generator.generate in this thread (no worker or LSP hop) on a FIM-shaped
// prompt of random ids: <fim_prefix> prefix <fim_suffix> suffix <fim_middle>, ~1024 tokens
// (20% suffix, as the server's default budget). Cold = an empty cache (the whole prompt is
// prefilled). Warm = a typing sequence: each request changes the last prefix token and appends one
// (a few characters typed), so the cached prompt is reused up to there and the rest of the prefix
// tail, the suffix and <fim_middle> run again. Each request decodes greedily up to 32 tokens or a
// stop token (a newline id); random weights rarely stop early, so this is the long end of typical.

export interface BenchInferOptions {
  threads?: number;
  /** The first gets every measurement (default float32: what the server loads); the others decode only. */
  precisions?: Precision[];
  promptTokens?: number;
  decodeTokens?: number;
  /** Repeats of the prefill (the median is reported). */
  prefillRepeats?: number;
  /**
   * Completion latency: cold requests, warm (typing) requests, prompt tokens, max new tokens;
   * false skips it (prefill and decode only).
   */
  completion?: { coldRequests?: number; warmRequests?: number; promptTokens?: number; maxTokens?: number } | false;
  /** A model's shapes with random weights (default: the reference config). */
  config?: ModelConfig;
  /** A checkpoint folder to bench instead (its weights, read as the server reads them). */
  base?: string;
  /** Writes ORT's per-node profile of decode steps at the first precision to <prefix>_*.json. */
  profilePrefix?: string;
  log?: (line: string) => void;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

/** A session running only the per-token weight MatMuls, with preallocated feeds and fetches. */
async function weightMatmulRunner(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  precision: Precision,
  threads: number,
  rng: Rng,
) {
  const session = await createSession(buildWeightMatmulGraph(cfg, weights, precision), { threads });
  const feeds: Record<string, ort.Tensor> = {};
  const fetches: Record<string, ort.Tensor> = {};
  for (const name of session.inputNames) {
    const features = Number(name.slice(1));
    feeds[name] = new ort.Tensor('float32', rng.fillNormal(new Float32Array(features)), [1, features]);
  }
  for (const [i, name] of session.outputNames.entries()) {
    const dims = (session.outputMetadata[i] as { shape: readonly (number | string)[] }).shape.map(Number);
    fetches[name] = new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
  }
  return { run: () => session.run(feeds, fetches), release: () => session.release() };
}

interface DecodeMeasurement {
  prefillMs: number;
  decodeMsPerToken: number;
  decodeP50MsPerToken: number;
  weightMatmulMsPerToken: number;
  weightMatmulP50MsPerToken: number;
  ratio: number;
  ratioP50: number;
}

async function measureDecode(
  session: KvCacheSession,
  matmuls: { run: () => Promise<unknown> },
  prompt: number[],
  decodeTokens: number,
  prefillRepeats: number,
): Promise<DecodeMeasurement> {
  // Warm-up: first touches of the arena and of fresh pages are slow on these machines.
  await session.append(prompt);
  for (let i = 0; i < 8; i++) {
    await session.append([i]);
    await matmuls.run();
  }
  const prefillTimes: number[] = [];
  let next = 0;
  for (let r = 0; r < prefillRepeats; r++) {
    session.truncate(0);
    const start = performance.now();
    next = argmax(await session.append(prompt));
    prefillTimes.push(performance.now() - start);
  }
  const stepTimes: number[] = [];
  const matmulTimes: number[] = [];
  for (let i = 0; i < decodeTokens; i++) {
    let start = performance.now();
    next = argmax(await session.append([next]));
    stepTimes.push(performance.now() - start);
    start = performance.now();
    await matmuls.run();
    matmulTimes.push(performance.now() - start);
  }
  const decodeMsPerToken = mean(stepTimes);
  const weightMatmulMsPerToken = mean(matmulTimes);
  return {
    prefillMs: round(median(prefillTimes), 3),
    decodeMsPerToken: round(decodeMsPerToken, 3),
    decodeP50MsPerToken: round(median(stepTimes), 3),
    weightMatmulMsPerToken: round(weightMatmulMsPerToken, 3),
    weightMatmulP50MsPerToken: round(median(matmulTimes), 3),
    ratio: round(decodeMsPerToken / weightMatmulMsPerToken, 3),
    ratioP50: round(median(stepTimes) / median(matmulTimes), 3),
  };
}

/** Matrix-product op types: the weights' products and attention's FusedMatMuls. */
const MATMUL_OPS = new Set(['MatMul', 'FusedMatMul', 'MatMulNBits', 'DynamicQuantizeMatMul', 'Gemm']);

/**
 * Where one decode step's time goes: a profiled session of its own decodes `steps` tokens after
 * the prompt; the prompt's run is left out of the sums. Per step: wall time of append(), ORT's
 * model_run, the kernels' sum (the rest of model_run is ORT's own work between kernels; the rest
 * of the wall time is the binding's and ours), and kernel time by op type.
 */
async function profileDecode(
  create: (profilePrefix: string) => Promise<KvCacheSession>,
  prefix: string,
  prompt: number[],
  steps: number,
) {
  const session = await create(prefix);
  const wall: number[] = [];
  try {
    let next = argmax(await session.append(prompt));
    for (let i = 0; i < steps; i++) {
      const start = performance.now();
      next = argmax(await session.append([next]));
      wall.push(performance.now() - start);
    }
  } finally {
    await session.dispose(); // ORT writes the profile here
  }
  const file = newestProfile(prefix);
  if (!file) throw new Error(`no ONNX Runtime profile was written at ${prefix}_*.json`);
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as Array<{
    cat?: string;
    name?: string;
    ts?: number;
    dur?: number;
    args?: { op_name?: string };
  }>;
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const decodeRuns = runs.slice(-steps);
  const from = decodeRuns[0]?.ts ?? 0;
  const byOp = new Map<string, { us: number; nodes: number }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name || (e.ts ?? 0) < from) continue;
    const entry = byOp.get(e.args.op_name) ?? { us: 0, nodes: 0 };
    entry.us += e.dur ?? 0;
    entry.nodes++;
    byOp.set(e.args.op_name, entry);
  }
  const n = Math.max(1, decodeRuns.length);
  const kernels = [...byOp.values()].reduce((a, b) => a + b.us, 0);
  const matmul = [...byOp].filter(([op]) => MATMUL_OPS.has(op)).reduce((a, [, b]) => a + b.us, 0);
  const ms = (us: number) => round(us / n / 1000, 3);
  return {
    file,
    steps: decodeRuns.length,
    wallMsPerStep: round(mean(wall), 3),
    modelRunMsPerStep: ms(decodeRuns.reduce((a, r) => a + (r.dur ?? 0), 0)),
    kernelMsPerStep: ms(kernels),
    matmulKernelShare: kernels > 0 ? round(matmul / kernels, 3) : 0,
    nodesPerStep: round([...byOp.values()].reduce((a, b) => a + b.nodes, 0) / n, 1),
    byOp: Object.fromEntries(
      [...byOp]
        .sort((a, b) => b[1].us - a[1].us)
        .map(([op, { us, nodes }]) => [op, { ms: ms(us), nodes: round(nodes / n, 1) }]),
    ),
  };
}

async function measureCompletions(
  session: KvCacheSession,
  cfg: ModelConfig,
  rng: Rng,
  options: Exclude<BenchInferOptions['completion'], false | undefined>,
) {
  const promptTokens = options.promptTokens ?? 1024;
  const maxTokens = options.maxTokens ?? 32;
  // Stand-ins for the special and newline ids (the reference config has no tokenizer).
  const [fimPrefix, fimSuffix, fimMiddle, newline] = [cfg.vocabSize - 1, cfg.vocabSize - 2, cfg.vocabSize - 3, 10];
  const text = () => 11 + rng.int(cfg.vocabSize - 16);
  const suffixLength = Math.round(0.2 * promptTokens);
  const prefix = Array.from({ length: promptTokens - suffixLength - 3 }, text);
  const suffix = Array.from({ length: suffixLength }, text);
  const prompt = () => [fimPrefix, ...prefix, fimSuffix, ...suffix, fimMiddle];
  const generator = new Generator(session);
  const request = async () => {
    const start = performance.now();
    const result = await generator.generate(prompt(), {
      maxTokens,
      eosTokenIds: [fimPrefix, fimSuffix, fimMiddle, newline],
    });
    return { ms: performance.now() - start, result };
  };
  const cold: number[] = [];
  for (let i = 0; i < (options.coldRequests ?? 3); i++) {
    generator.reset();
    cold.push((await request()).ms);
  }
  const warm: number[] = [];
  const rerun: number[] = [];
  const generated: number[] = [];
  for (let i = 0; i < (options.warmRequests ?? 20); i++) {
    // A few characters typed: the last prefix token changes and one more follows.
    prefix[prefix.length - 1] = text();
    prefix.push(text());
    const { ms, result } = await request();
    warm.push(ms);
    rerun.push(result.promptTokens - result.reusedTokens);
    generated.push(result.tokens.length);
  }
  return {
    completionP50Ms: round(percentile(warm, 50), 3),
    completionP95Ms: round(percentile(warm, 95), 3),
    completionColdP50Ms: round(percentile(cold, 50), 3),
    completionColdP95Ms: round(percentile(cold, 95), 3),
    completion: {
      measured:
        'Generator.generate in-process, FIM-shaped prompt of random ids; cold: empty cache; warm: typing (last prefix token changed + one appended per request, cached prefix reused); greedy up to maxTokens or a stop id',
      promptTokens,
      maxTokens,
      warmRequests: warm.length,
      coldRequests: cold.length,
      meanPromptTokensRun: round(mean(rerun), 1),
      meanTokensGenerated: round(mean(generated), 1),
    },
  };
}

export async function benchInfer(options: BenchInferOptions = {}): Promise<Record<string, unknown>> {
  if (options.base && options.config) throw new Error('bench infer takes --base or --model-config, not both');
  const checkpoint = options.base ? await openCheckpoint(options.base) : null;
  const cfg = checkpoint?.config ?? options.config ?? referenceConfig();
  const threads = options.threads ?? 2;
  const precisions = options.precisions ?? ['float32', 'int8'];
  if (precisions.length === 0) throw new Error('bench infer needs at least one precision');
  const promptTokens = options.promptTokens ?? 256;
  const decodeTokens = options.decodeTokens ?? 64;
  const log = options.log ?? (() => {});
  // Read per tensor, as the server reads a checkpoint: quantized weights never sit beside float32 ones.
  const weights = checkpoint?.weights ?? randomLazyWeights(cfg, 1);
  const rng = new Rng(2);
  const prompt = Array.from({ length: promptTokens }, () => rng.int(cfg.vocabSize));
  const completionPrompt = options.completion === false ? 0 : (options.completion?.promptTokens ?? 1024);
  const maxContext = Math.min(
    cfg.maxPositionEmbeddings,
    Math.max(promptTokens + decodeTokens + 16, completionPrompt + 64),
  );

  const byPrecision: Record<string, DecodeMeasurement> = {};
  let completion: Awaited<ReturnType<typeof measureCompletions>> | undefined;
  let profile: Awaited<ReturnType<typeof profileDecode>> | undefined;
  for (const [index, precision] of precisions.entries()) {
    log(`bench infer: ${precision} decoder and weight MatMuls (${threads} threads)`);
    const session = await KvCacheSession.create(cfg, weights, { precision, threads, maxContext });
    const matmuls = await weightMatmulRunner(cfg, weights, precision, threads, rng);
    try {
      byPrecision[precision] = await measureDecode(session, matmuls, prompt, decodeTokens, options.prefillRepeats ?? 3);
      if (index === 0 && options.completion !== false) {
        log(`bench infer: ${precision} completion latency`);
        session.truncate(0);
        completion = await measureCompletions(session, cfg, rng, options.completion || {});
      }
    } finally {
      await session.dispose();
      await matmuls.release();
    }
    if (index === 0 && options.profilePrefix !== undefined) {
      log(`bench infer: ${precision} decode profile`);
      const create = (profilePrefix: string) =>
        KvCacheSession.create(cfg, weights, { precision, threads, maxContext, profilePrefix });
      profile = await profileDecode(create, options.profilePrefix, prompt, decodeTokens);
    }
  }
  const [first, ...others] = precisions;
  return {
    ...byPrecision[first],
    ...completion,
    ...(profile ? { profile } : {}),
    precision: first,
    others: Object.fromEntries(others.map((p) => [p, byPrecision[p]])),
    threads,
    promptTokens,
    decodeTokens,
    model: options.base ?? (options.config ? 'random weights' : 'reference config, random weights'),
    config: {
      hiddenSize: cfg.hiddenSize,
      numLayers: cfg.numLayers,
      numHeads: cfg.numHeads,
      numKvHeads: cfg.numKvHeads,
      intermediateSize: cfg.intermediateSize,
      vocabSize: cfg.vocabSize,
    },
  };
}
