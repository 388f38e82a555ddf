import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { referenceConfig } from './reference';
import { parseModelConfig, type ModelConfig } from '../../model/config';
import { Rng } from '../../model/random';
import { EngineWorker } from '../../compute/runtime/client';
import { defaultThreadCount } from '../../compute/runtime/session';
import { Trainer, type TrainingOptions } from '../../training/ort/trainer';
import { probeTorch } from '../../training/torch-bridge/python';
import { TorchTrainer } from '../../training/torch-bridge/torch-trainer';
import { round } from '../../util/round';

// Training speed of the two CPU engines in one run, on the same weights, batches and thread
// count: ONNX Runtime (our graphs) vs PyTorch (trainer/training/torch). Steps alternate between the two
// engines so load from elsewhere on a shared machine hits both; the median step of each counts.
// Prints one JSON object: tokensPerSecond per engine and ratio = torch / ort.
//
//   npx tsx trainer/tools/bench/torch-vs-ort.ts [--steps 6] [--threads 2] [--batch 8] [--seq 256]
//                                      [--method lora|full] [--model-config config.json]

export interface EngineBenchOptions {
  config?: ModelConfig;
  method?: 'lora' | 'full';
  batch?: number;
  seqLen?: number;
  threads?: number;
  steps?: number;
  warmupSteps?: number;
  log?: (line: string) => void;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
export async function benchEngines(options: EngineBenchOptions = {}): Promise<Record<string, unknown>> {
  const config = options.config ?? referenceConfig();
  const method = options.method ?? 'lora';
  const batch = options.batch ?? 8;
  const seqLen = options.seqLen ?? 256;
  const threads = options.threads ?? defaultThreadCount();
  const steps = options.steps ?? 6;
  const warmupSteps = options.warmupSteps ?? 1;
  const log = options.log ?? (() => {});
  const probe = await probeTorch();
  if (!probe.ok) throw new Error(`PyTorch backend unavailable: ${probe.reason}`);

  const trainingOptions: TrainingOptions = {
    trainable:
      method === 'lora'
        ? { method: 'lora', lora: { targets: ['q_proj', 'v_proj'], r: 16, alpha: 32 } }
        : { method: 'full' },
    batch,
    seqLen,
    threads,
  };
  const source = { random: { config, seed: 1 } };
  const rng = new Rng(2);
  const tokens = Int32Array.from({ length: batch * (seqLen + 1) }, () => rng.int(config.vocabSize));
  const targets = batch * seqLen;

  const worker = EngineWorker.start();
  let torch: TorchTrainer | undefined;
  try {
    log('building the ONNX Runtime training session');
    const ort = await Trainer.create(worker, source, trainingOptions);
    log('starting the PyTorch step server');
    const pytorch = await TorchTrainer.create(source, { ...trainingOptions, device: 'cpu' });
    torch = pytorch;
    const times = { ort: [] as number[], torch: [] as number[] };
    const wall = { ort: [] as number[], torch: [] as number[] };
    const timed = async <T>(call: () => Promise<T>): Promise<[T, number]> => {
      const started = performance.now();
      const value = await call();
      return [value, (performance.now() - started) / 1000];
    };
    const losses = { ort: [] as number[], torch: [] as number[] };
    for (let i = 0; i < warmupSteps + steps; i++) {
      // Learning rate 0: the weights stay put, so every step does the same work.
      const [a, aWall] = await timed(() => ort.step({ tokens }, 0));
      const [b, bWall] = await timed(() => pytorch.step({ tokens }, 0));
      losses.ort.push(a.loss);
      losses.torch.push(b.loss);
      if (i >= warmupSteps) {
        times.ort.push(a.seconds);
        times.torch.push(b.seconds);
        wall.ort.push(aWall);
        wall.torch.push(bWall);
      }
      log(`step ${i + 1}: ort ${(a.seconds * 1000).toFixed(0)} ms, torch ${(b.seconds * 1000).toFixed(0)} ms`);
    }
    await ort.release();
    // Wall time of each call as the training loop sees it (worker / process round trip included);
    // engineStepMs is the time inside the engine only.
    const ortTps = targets / median(wall.ort);
    const torchTps = targets / median(wall.torch);
    return {
      tokensPerSecond: { ort: round(ortTps, 1), torch: round(torchTps, 1) },
      ratio: Number((torchTps / ortTps).toFixed(3)),
      stepMs: { ort: round(median(wall.ort) * 1000, 1), torch: round(median(wall.torch) * 1000, 1) },
      engineStepMs: { ort: round(median(times.ort) * 1000, 1), torch: round(median(times.torch) * 1000, 1) },
      firstLoss: { ort: losses.ort[0], torch: losses.torch[0] },
      config: {
        method,
        batch,
        seqLen,
        threads,
        steps,
        warmupSteps,
        lora: method === 'lora' ? { r: 16, alpha: 32, targets: ['q_proj', 'v_proj'] } : null,
        model: config,
      },
      torch: { version: pytorch.torchVersion, python: probe.python, threads: pytorch.threads, device: pytorch.device },
      environment: {
        OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
        OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? null,
      },
    };
  } finally {
    await torch?.release();
    await worker.terminate();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string' },
      warmup: { type: 'string' },
      threads: { type: 'string' },
      batch: { type: 'string' },
      seq: { type: 'string' },
      method: { type: 'string' },
      'model-config': { type: 'string' },
      quiet: { type: 'boolean' },
    },
  });
  const int = (name: string, value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${value}"`);
    return n;
  };
  if (values.method !== undefined && values.method !== 'lora' && values.method !== 'full')
    throw new Error(`--method must be lora or full, got "${values.method}"`);
  const config = values['model-config']
    ? parseModelConfig(JSON.parse(fs.readFileSync(values['model-config'], 'utf8')), values['model-config'])
    : undefined;
  const result = await benchEngines({
    config,
    method: values.method as 'lora' | 'full' | undefined,
    steps: int('steps', values.steps),
    warmupSteps: int('warmup', values.warmup),
    threads: int('threads', values.threads),
    batch: int('batch', values.batch),
    seqLen: int('seq', values.seq),
    log: values.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

if (require.main === module) {
  main().catch((error: Error) => {
    process.stderr.write(`error: ${error.message}\n`);
    process.exit(1);
  });
}
