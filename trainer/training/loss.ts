import { Value } from '../graph/graph';
import * as op from '../graph/ops';

// Causal LM loss with a loss mask: Σ mask · nll / max(1, Σ mask), nll = −log softmax(logits)[target].

export interface CausalLmLoss {
  /** Scalar loss. */
  loss: Value;
  /** Σ mask: the targets that count. */
  count: Value;
  /**
   * d loss / d logits [B, T, V] = (softmax − onehot(target)) · mask / max(1, Σ mask), built in three
   * passes over the logits (exp, scale, scatter-add at the targets). Autodiff through LogSoftmax
   * and GatherElements gives the same values in about six passes, and these tensors are the
   * largest of the step; the whole-model finite-difference test checks it.
   */
  logitsGradient: Value;
}

/**
 * logits [B, T, V], targets int64 [B, T], mask [B, T] (1 = the target counts). Without
 * `withGradient` the logits gradient is not built (evaluation graphs: ORT runs every node).
 */
export function causalLmLoss(logits: Value, targets: Value, mask: Value, withGradient?: true): CausalLmLoss;
export function causalLmLoss(logits: Value, targets: Value, mask: Value, withGradient: false): Omit<CausalLmLoss, 'logitsGradient'>;
export function causalLmLoss(logits: Value, targets: Value, mask: Value, withGradient = true): Omit<CausalLmLoss, 'logitsGradient'> & { logitsGradient?: Value } {
  const logProbs = op.logSoftmax(logits, -1); // [B, T, V]
  const targetIndex = op.unsqueeze(targets, [-1]); // [B, T, 1]
  const picked = op.gatherElements(logProbs, targetIndex, -1); // [B, T, 1]
  const nll = op.neg(op.squeeze(picked, [-1])); // [B, T]
  const all = Array.from({ length: mask.rank }, (_, i) => i);
  const count = op.reduceSum(mask, all, false);
  const denominator = op.max(count, op.scalarLike(count, 1));
  const loss = op.div(op.reduceSum(op.mul(nll, mask), all, false), denominator);
  if (!withGradient) return { loss, count };

  const weight = op.unsqueeze(op.div(mask, denominator), [-1]); // [B, T, 1]
  const scaledProbs = op.mul(op.exp(logProbs), weight); // [B, T, V]
  const logitsGradient = op.scatterElements(scaledProbs, targetIndex, op.neg(weight), -1, 'add');
  return { loss, count, logitsGradient };
}
