import { Value } from '../graph/graph';
import * as op from '../graph/ops';

// Causal LM loss with a loss mask: Σ mask · nll / max(1, Σ mask), nll = −log softmax(logits)[target].

/**
 * logits [B, T, V], targets int64 [B, T], mask [B, T] (1 = the target counts) → scalar loss.
 * The scalar count of masked-in targets is returned too (for token accounting).
 */
export function causalLmLoss(logits: Value, targets: Value, mask: Value): { loss: Value; count: Value } {
  const logProbs = op.logSoftmax(logits, -1); // [B, T, V]
  const picked = op.gatherElements(logProbs, op.unsqueeze(targets, [-1]), -1); // [B, T, 1]
  const nll = op.neg(op.squeeze(picked, [-1])); // [B, T]
  const all = Array.from({ length: mask.rank }, (_, i) => i);
  const count = op.reduceSum(mask, all, false);
  const loss = op.div(op.reduceSum(op.mul(nll, mask), all, false), op.max(count, op.scalarLike(count, 1)));
  return { loss, count };
}
