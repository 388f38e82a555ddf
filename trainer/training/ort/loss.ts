import type { Value } from '../../compute/graph/graph';
import * as op from '../../compute/graph/ops';

// Causal LM loss with a loss mask: Σ mask · nll / max(1, Σ mask), nll = −log softmax(logits)[target].
// lm_head and the loss run over row chunks of the hidden states, so each chunk's logits (the
// largest tensors of a step: [B·T, V]) stay cache-sized through the product, the softmax and the
// gradient, instead of streaming a [B·T, V] tensor through memory five times.

export interface CausalLmLoss {
  /** Scalar loss. */
  loss: Value;
  /** Σ mask: the targets that count. */
  count: Value;
  /**
   * Each chunk's logits with d loss / d logits = (softmax − onehot(target)) · mask / max(1, Σ mask),
   * built in three passes (exp, scale, scatter-add at the targets). Autodiff through LogSoftmax
   * and GatherElements gives the same values in about six; the whole-model finite-difference
   * test checks it. Empty when the gradient is not wanted.
   */
  seeds: { value: Value; seed: Value }[];
}

export interface CausalLmLossOptions {
  /** Rows (tokens) per chunk; default: whole. */
  rowsPerChunk?: number;
  /** Build the logits gradients (training); evaluation graphs skip them (ORT runs every node). */
  withGradient?: boolean;
}

/**
 * hidden [B, T, D] (after the final norm), head [V, D], targets int64 [B, T], mask [B, T]
 * (1 = the target counts).
 */
export function causalLmLoss(
  hidden: Value,
  head: Value,
  targets: Value,
  mask: Value,
  options: CausalLmLossOptions = {},
): CausalLmLoss {
  const [B, T, D] = hidden.staticShape();
  const rows = B * T;
  const perChunk = Math.max(1, Math.min(rows, options.rowsPerChunk ?? rows));
  const sizes: number[] = [];
  for (let at = 0; at < rows; at += perChunk) sizes.push(Math.min(perChunk, rows - at));
  const split = (x: Value) => (sizes.length === 1 ? [x] : op.split(x, 0, sizes));
  const hiddenRows = split(op.reshape(hidden, [rows, D])); // [R, D] each
  const targetRows = split(op.reshape(targets, [rows]));
  const maskRows = split(op.reshape(mask, [rows]));

  const count = op.reduceSum(mask, [0, 1], false);
  const denominator = op.max(count, op.scalarLike(count, 1));
  const sums: Value[] = [];
  const seeds: { value: Value; seed: Value }[] = [];
  hiddenRows.forEach((h, c) => {
    const logits = op.fusedMatmul(h, head, { transB: true }); // [R, V]
    const logProbs = op.logSoftmax(logits, -1);
    const targetIndex = op.unsqueeze(targetRows[c], [-1]); // [R, 1]
    const nll = op.neg(op.squeeze(op.gatherElements(logProbs, targetIndex, -1), [-1])); // [R]
    sums.push(op.reduceSum(op.mul(nll, maskRows[c]), [0], false));
    if (options.withGradient === false) return;
    const weight = op.unsqueeze(op.div(maskRows[c], denominator), [-1]); // [R, 1]
    const scaledProbs = op.mul(op.exp(logProbs), weight);
    seeds.push({ value: logits, seed: op.scatterElements(scaledProbs, targetIndex, op.neg(weight), -1, 'add') });
  });
  const loss = op.div(op.sum(sums), denominator);
  return { loss, count, seeds };
}

/** Rows per loss chunk so one chunk's logits take about `bytes` (16 MB: cache-sized on these CPUs). */
export function lossRowsPerChunk(vocabSize: number, bytesPerValue: number, bytes = 16 * 1024 * 1024): number {
  return Math.max(64, Math.floor(bytes / (vocabSize * bytesPerValue)));
}
