// The pretraining loop: training/ort's Trainer in `full` mode (every weight trainable, AdamW in the graph),
// fed from the packed token stream. Checkpoints (weights + AdamW moments + progress) are written
// atomically every few minutes, so a run can stop and resume across sittings and see exactly the
// batches it would have seen.
//
// Schedule: linear warm-up, then constant, then linear decay to 10% over the last 25% of the run.
// "The run" is either a fixed number of steps or a wall-time budget (progress = trained seconds /
// budget, summed across sittings), so a time-boxed run on a shared machine still decays properly.
// A finished run can be extended to a longer length: the learning rate warms up again from where
// it ended to the peak and decays over the last quarter of the new length (a warm restart).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ModelConfig, projectionWeightName, toHfConfigJson } from '../../model/config';
import { randomCheckpointWeights } from '../../model/checkpoint';
import { readSafetensors, writeSafetensors, writeFileAtomically } from '../../model/safetensors';
import { EngineWorker } from '../../compute/runtime/client';
import { type OptimizerState, Trainer } from '../../training/ort/trainer';
import type { HostTensor } from '../../model/tensor';
import { type FimCuts, RowSampler } from './data';

export interface PretrainHyperparameters {
  batch: number;
  seqLen: number;
  peakLearningRate: number;
  warmupSteps: number;
  /** Final learning rate as a fraction of the peak. */
  finalLearningRateFraction: number;
  /** Share of the run spent decaying. */
  decayFraction: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  maxGradNorm: number;
  seed: number;
  threads: number;
}

export const DEFAULT_HYPERPARAMETERS: PretrainHyperparameters = {
  batch: 8,
  seqLen: 256,
  peakLearningRate: 2e-3,
  warmupSteps: 60,
  finalLearningRateFraction: 0.1,
  decayFraction: 0.25,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  maxGradNorm: 1,
  seed: 1234,
  threads: 2,
};

export type RunLength = { steps: number } | { seconds: number };

export interface TrainProgress {
  step: number;
  tokens: number;
  trainSeconds: number;
  sittings: number;
  /** [step, loss, gradNorm, lr] every logEvery steps. */
  history: [number, number, number, number][];
  done: boolean;
  /** Extensions: the step at which each began, the lengths before and after, its FIM cut points. */
  extensions?: { step: number; from: RunLength; to: RunLength; fimCuts?: FimCuts }[];
  /** FIM cut points of the first sitting (absent: 'char', what runs recorded before there was a choice). */
  fimCuts?: FimCuts;
}

interface RunState {
  config: Record<string, unknown>;
  hyperparameters: PretrainHyperparameters;
  length: RunLength;
  progress: TrainProgress;
}

const STATE_FILE = 'state.json';
const WEIGHTS_FILE = 'weights.safetensors';
const OPTIMIZER_FILE = 'optimizer.safetensors';

/**
 * Learning rate at `step` given the run's progress in [0, 1]. After an extension at step
 * `restartStep`, the warm-up repeats from the final learning rate to the peak.
 */
export function learningRateAt(
  h: PretrainHyperparameters,
  step: number,
  progress: number,
  restartStep?: number,
): number {
  let warm = Math.min(1, (step + 1) / h.warmupSteps);
  if (restartStep !== undefined && step >= restartStep) {
    const t = Math.min(1, (step - restartStep + 1) / h.warmupSteps);
    warm = h.finalLearningRateFraction + t * (1 - h.finalLearningRateFraction);
  }
  const decayStart = 1 - h.decayFraction;
  let factor = 1;
  if (progress > decayStart) {
    const t = Math.min(1, (progress - decayStart) / h.decayFraction);
    factor = 1 - t * (1 - h.finalLearningRateFraction);
  }
  return h.peakLearningRate * warm * factor;
}

/** Fresh weights: N(0, 0.02), residual output projections scaled by 1/√(2L) (GPT-2's init). */
export function initialWeights(cfg: ModelConfig, seed: number): Map<string, HostTensor> {
  const weights = randomCheckpointWeights(cfg, seed, { std: 0.02 });
  const scale = 1 / Math.sqrt(2 * cfg.numLayers);
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of ['o_proj', 'down_proj'] as const) {
      const data = weights.get(projectionWeightName(layer, projection))!.data as Float32Array;
      for (let i = 0; i < data.length; i++) data[i] *= scale;
    }
  }
  return weights;
}

function saveRun(dir: string, state: RunState, weights: Map<string, HostTensor>, optimizer: OptimizerState): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, WEIGHTS_FILE), weights);
  const moments: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(optimizer.m)) moments[`m/${name}`] = t;
  for (const [name, t] of Object.entries(optimizer.v)) moments[`v/${name}`] = t;
  writeSafetensors(path.join(dir, OPTIMIZER_FILE), moments, { step: String(optimizer.step) });
  // state.json last: a checkpoint counts only once its tensors are on disk.
  writeFileAtomically(path.join(dir, STATE_FILE), [new TextEncoder().encode(JSON.stringify(state, null, 1))]);
}

function loadTensors(file: string): Map<string, HostTensor> {
  const st = readSafetensors(file);
  const out = new Map<string, HostTensor>();
  for (const [name, tensor] of st.tensors) out.set(name, tensor.toHostTensor());
  return out;
}

function loadRun(
  dir: string,
): { state: RunState; weights: Map<string, HostTensor>; optimizer: OptimizerState } | undefined {
  const stateFile = path.join(dir, STATE_FILE);
  if (!fs.existsSync(stateFile)) return undefined;
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as RunState;
  const weights = loadTensors(path.join(dir, WEIGHTS_FILE));
  const moments = loadTensors(path.join(dir, OPTIMIZER_FILE));
  const optimizer: OptimizerState = { step: state.progress.step, m: {}, v: {} };
  for (const [key, t] of moments) {
    const [kind, ...rest] = key.split('/');
    (kind === 'm' ? optimizer.m : optimizer.v)[rest.join('/')] = t;
  }
  return { state, weights, optimizer };
}

export interface TrainRunOptions {
  config: ModelConfig;
  hyperparameters: PretrainHyperparameters;
  length: RunLength;
  stream: Int32Array;
  /** Checkpoint folder (resumed when it holds a run of the same config and hyperparameters). */
  runDir: string;
  checkpointEverySeconds?: number;
  logEvery?: number;
  log?: (line: string) => void;
  /** Stop this sitting after this many seconds (the run resumes later). */
  sittingSeconds?: number;
  /** Allow `length` to exceed a finished or running run's recorded length (a warm restart). */
  extend?: boolean;
  /** How `stream`'s FIM examples were cut (recorded per sitting; a resume must not change it). */
  fimCuts?: FimCuts;
}

export interface TrainRunResult {
  weights: Map<string, HostTensor>;
  progress: TrainProgress;
  trainableParameters: number;
  flopsPerStep: number;
}

export async function trainRun(options: TrainRunOptions): Promise<TrainRunResult> {
  const log = options.log ?? (() => {});
  const h = options.hyperparameters;
  const configJson = toHfConfigJson(options.config);
  const sampler = new RowSampler(options.stream, h.batch, h.seqLen, h.seed);

  let weights: Map<string, HostTensor>;
  let optimizer: OptimizerState | undefined;
  let progress: TrainProgress = {
    step: 0,
    tokens: 0,
    trainSeconds: 0,
    sittings: 0,
    history: [],
    done: false,
    fimCuts: options.fimCuts ?? 'char',
  };
  const resumed = loadRun(options.runDir);
  if (resumed) {
    const sameLength = JSON.stringify(resumed.state.length) === JSON.stringify(options.length);
    const same =
      JSON.stringify(resumed.state.config) === JSON.stringify(configJson) &&
      JSON.stringify(resumed.state.hyperparameters) === JSON.stringify(h) &&
      (sameLength || options.extend === true);
    if (!same) {
      throw new Error(
        `${options.runDir} holds a run with a different config, hyperparameters or length; remove it or pass --fresh`,
      );
    }
    weights = resumed.weights;
    optimizer = resumed.optimizer;
    progress = resumed.state.progress;
    if (!sameLength) {
      const from = resumed.state.length;
      const longer =
        ('steps' in from && 'steps' in options.length && options.length.steps > from.steps) ||
        ('seconds' in from && 'seconds' in options.length && options.length.seconds > from.seconds);
      if (!longer)
        throw new Error(
          `${options.runDir}: an extension must be longer than the run's ${JSON.stringify(from)} in the same unit`,
        );
      progress.extensions = [
        ...(progress.extensions ?? []),
        { step: progress.step, from, to: options.length, fimCuts: options.fimCuts ?? 'char' },
      ];
      progress.done = false;
      log(
        `extending the run from ${JSON.stringify(from)} to ${JSON.stringify(options.length)} at step ${progress.step}`,
      );
    }
    const current = progress.extensions?.[progress.extensions.length - 1]?.fimCuts ?? progress.fimCuts ?? 'char';
    if (current !== (options.fimCuts ?? 'char')) {
      throw new Error(
        `${options.runDir}: this sitting trains on FIM cuts '${current}'; resume it with --fim-cuts ${current}, or extend the run to change them`,
      );
    }
    log(`resuming at step ${progress.step} (${progress.tokens} tokens, ${progress.trainSeconds.toFixed(0)} s trained)`);
  } else {
    weights = initialWeights(options.config, h.seed);
  }
  const state = (): RunState => ({ config: configJson, hyperparameters: h, length: options.length, progress });
  const fraction = (): number =>
    'steps' in options.length ? progress.step / options.length.steps : progress.trainSeconds / options.length.seconds;

  if (progress.done || fraction() >= 1) {
    progress.done = true;
    return { weights, progress, trainableParameters: 0, flopsPerStep: 0 };
  }

  const worker = EngineWorker.start();
  try {
    const trainer = await Trainer.create(
      worker,
      { config: options.config, weights: Object.fromEntries(weights) },
      {
        trainable: { method: 'full' },
        batch: h.batch,
        seqLen: h.seqLen,
        optimizer: {
          beta1: h.beta1,
          beta2: h.beta2,
          eps: 1e-8,
          weightDecay: h.weightDecay,
          maxGradNorm: h.maxGradNorm,
        },
        threads: h.threads,
        seed: h.seed,
      },
    );
    if (optimizer) await trainer.setOptimizerState(optimizer);
    log(
      `training graph ready in ${trainer.setupSeconds.toFixed(1)} s: ${trainer.trainableParameters} trainable parameters, ${(trainer.flopsPerStep.total / 1e9).toFixed(2)} GFLOP/step`,
    );
    progress.sittings++;
    const sittingStart = performance.now();
    let lastCheckpoint = performance.now();
    const logEvery = options.logEvery ?? 10;
    let windowLoss = 0;
    let windowSteps = 0;
    let windowStart = performance.now();
    const checkpoint = async (): Promise<void> => {
      weights = await trainer.getTrainable();
      saveRun(options.runDir, state(), weights, await trainer.getOptimizerState());
      lastCheckpoint = performance.now();
    };
    while (fraction() < 1) {
      const restart = progress.extensions?.[progress.extensions.length - 1]?.step;
      const lr = learningRateAt(h, progress.step, fraction(), restart);
      const t0 = performance.now();
      const result = await trainer.step({ tokens: sampler.batchAt(progress.step) }, lr);
      if (!Number.isFinite(result.loss))
        throw new Error(`loss became ${result.loss} at step ${progress.step}; lower the learning rate`);
      progress.trainSeconds += (performance.now() - t0) / 1000;
      progress.step++;
      progress.tokens += h.batch * h.seqLen;
      windowLoss += result.loss;
      windowSteps++;
      if (progress.step % logEvery === 0) {
        const seconds = (performance.now() - windowStart) / 1000;
        const loss = windowLoss / windowSteps;
        progress.history.push([
          progress.step,
          Number(loss.toFixed(4)),
          Number(result.gradNorm.toFixed(3)),
          Number(lr.toPrecision(4)),
        ]);
        log(
          `step ${progress.step} loss ${loss.toFixed(3)} gnorm ${result.gradNorm.toFixed(2)} lr ${lr.toExponential(2)} ` +
            `${((windowSteps * h.batch * h.seqLen) / seconds).toFixed(0)} tok/s, progress ${(100 * fraction()).toFixed(1)}%, epoch ${(progress.step * sampler.epochsPerStep).toFixed(2)}`,
        );
        windowLoss = 0;
        windowSteps = 0;
        windowStart = performance.now();
      }
      if ((performance.now() - lastCheckpoint) / 1000 >= (options.checkpointEverySeconds ?? 180)) await checkpoint();
      if (options.sittingSeconds !== undefined && (performance.now() - sittingStart) / 1000 >= options.sittingSeconds) {
        log(`sitting over after ${options.sittingSeconds} s; resume to continue`);
        break;
      }
    }
    progress.done = fraction() >= 1;
    await checkpoint();
    const flopsPerStep = trainer.flopsPerStep.total;
    const trainableParameters = trainer.trainableParameters;
    await trainer.release();
    return { weights, progress, trainableParameters, flopsPerStep };
  } finally {
    await worker.terminate();
  }
}

/** The weights of the last checkpoint in `runDir`. */
export function loadRunWeights(runDir: string): { weights: Map<string, HostTensor>; progress: TrainProgress } {
  const run = loadRun(runDir);
  if (!run) throw new Error(`${runDir}: no training checkpoint`);
  return { weights: run.weights, progress: run.state.progress };
}
