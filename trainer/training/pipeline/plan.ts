import { type ModelConfig, countParameters } from '../../model/config';

// How much to train and in what shape, from the budget, the model and the data.
//
// Shape rule (batch B, sequence length T):
//   1. T = the largest power of two ≤ min(512, maxPositionEmbeddings / 2) (half the context stays
//      free for evaluation prompts plus generated tokens), and ≥ 16.
//   2. B = 4096 / T tokens per step (8 rows at T = 512), at most 16.
//   3. The logits [B, T, V] (float32, several copies live in a step) stay under 512 MiB:
//      B·T·V ≤ 128 Mi; B shrinks first, then T.
//   4. The budget must buy at least MIN_STEPS steps (warm-up + cosine need room): B halves down
//      to 1, then T halves down to 64, until budgetTokens / (B·T) ≥ MIN_STEPS.
// Steps = budgetTokens / (B·T), capped at maxEpochs passes over the packed training rows.
// With --minutes the budget in tokens is minutes × measured token slots/s (timed steps at learning
// rate 0 before training); before that measurement a FLOP estimate sizes the shape.
// Learning rate: linear warm-up over 6% of the steps (1..50), then cosine down to 10% of the peak.

export const MIN_STEPS = 40;
const MAX_SEQ_LEN = 512;
const MIN_SEQ_LEN = 64;
const TOKENS_PER_STEP = 4096;
const MAX_BATCH = 16;
const MAX_LOGIT_ELEMENTS = 128 * 1024 * 1024;

export type Budget = { minutes: number } | { tokens: number };

export interface Shape {
  batch: number;
  seqLen: number;
}

export function largestPowerOfTwoAtMost(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

/** B and T for a budget of `budgetTokens` (see the rule above). */
export function chooseShape(cfg: ModelConfig, budgetTokens: number): Shape {
  let seqLen = Math.max(16, largestPowerOfTwoAtMost(Math.min(MAX_SEQ_LEN, Math.floor(cfg.maxPositionEmbeddings / 2))));
  let batch = Math.max(1, Math.min(MAX_BATCH, Math.floor(TOKENS_PER_STEP / seqLen)));
  while (batch * seqLen * cfg.vocabSize > MAX_LOGIT_ELEMENTS && (batch > 1 || seqLen > MIN_SEQ_LEN)) {
    if (batch > 1) batch = Math.floor(batch / 2);
    else seqLen /= 2;
  }
  while (budgetTokens / (batch * seqLen) < MIN_STEPS && (batch > 1 || seqLen > MIN_SEQ_LEN)) {
    if (batch > 1) batch = Math.floor(batch / 2);
    else seqLen /= 2;
  }
  return { batch, seqLen };
}

/**
 * A rough training speed before anything ran: matrix-product FLOPs per token (forward 2N, input
 * gradients 2N, weight gradients 2N for full; attention 12·L·T·D) at an assumed 10 GFLOP/s per
 * thread: what small models reached on a shared 2-core machine (elementwise work and the loss
 * dominate them; large models do better, and then get a smaller batch than they could afford).
 * Only sizes the shape; the step count comes from a measurement.
 */
export function estimateTokensPerSecond(
  cfg: ModelConfig,
  method: 'lora' | 'full',
  seqLen: number,
  threads: number,
): number {
  const parameters = countParameters(cfg);
  const perToken = (method === 'full' ? 6 : 4) * parameters + 12 * cfg.numLayers * seqLen * cfg.hiddenSize;
  return (10e9 * Math.max(1, threads)) / perToken;
}

export interface Schedule {
  peakLearningRate: number;
  warmupSteps: number;
  totalSteps: number;
  /** Final learning rate as a fraction of the peak. */
  minRatio: number;
}

export function warmupStepsFor(totalSteps: number): number {
  return Math.min(50, Math.max(1, Math.round(0.06 * totalSteps)));
}

/** Learning rate of 1-based step `step`: linear warm-up, then cosine to minRatio·peak. */
export function learningRateAt(schedule: Schedule, step: number): number {
  const { peakLearningRate: peak, warmupSteps, totalSteps, minRatio } = schedule;
  if (step <= warmupSteps) return (peak * step) / warmupSteps;
  const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}
