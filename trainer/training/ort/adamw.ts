import type { Graph, Value } from '../../compute/graph/graph';
import * as op from '../../compute/graph/ops';

// AdamW as graph nodes, after the gradients: global grad-norm clipping, then PyTorch's AdamW
// (decoupled weight decay p ← p·(1 − lr·wd), bias-corrected moments). The learning rate and the
// 1-based step count are graph inputs, so schedules and resumes need no new session.

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global L2 norm the gradients are clipped to; Infinity turns clipping off. */
  maxGradNorm: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };

export interface AdamWParameter {
  param: Value;
  grad: Value;
  m: Value;
  v: Value;
  /** Weight decay applies (HF convention: not to norms and biases). */
  decay: boolean;
}

export interface AdamWUpdate {
  param: Value;
  m: Value;
  v: Value;
}

export function appendAdamW(
  graph: Graph,
  parameters: readonly AdamWParameter[],
  learningRate: Value, // scalar
  step: Value, // scalar, 1-based
  options: AdamWOptions,
): { updates: AdamWUpdate[]; gradNorm: Value } {
  return graph.scope('adamw', () => {
    const dtype = learningRate.dtype;
    const s = (v: number) => op.scalar(graph, v, dtype);
    // Global norm over every trainable tensor: √Σ‖g‖².
    const squares = parameters.map((p) =>
      op.reduceSumSquare(
        p.grad,
        Array.from({ length: p.grad.rank }, (_, i) => i),
        false,
      ),
    );
    const gradNorm = op.sqrt(op.sum(squares));
    // clip = min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_.
    const clip = Number.isFinite(options.maxGradNorm)
      ? op.min(s(1), op.div(s(options.maxGradNorm), op.add(gradNorm, s(1e-6))))
      : s(1);
    // Every scalar factor is folded into as few full-size passes as possible (each pass streams a
    // tensor the size of the model in full fine-tuning): the clip factor goes into the moments'
    // coefficients, and √(1 − β2^t) into ε and the step size, since
    // m̂ / (√v̂ + ε) = (m / (√v + ε·√(1 − β2^t))) · √(1 − β2^t) / (1 − β1^t).
    const bias1 = op.sub(s(1), op.pow(s(options.beta1), step)); // 1 − β1^t
    const sqrtBias2 = op.sqrt(op.sub(s(1), op.pow(s(options.beta2), step))); // √(1 − β2^t)
    const stepSize = op.div(op.mul(learningRate, sqrtBias2), bias1);
    const eps = op.mul(sqrtBias2, s(options.eps));
    const gradScale = op.mul(clip, s(1 - options.beta1));
    const squareScale = op.mul(op.mul(clip, clip), s(1 - options.beta2));
    const decayFactor = op.sub(s(1), op.mul(learningRate, s(options.weightDecay)));

    const updates = parameters.map((p) => {
      const m = op.add(op.mul(p.m, s(options.beta1)), op.mul(p.grad, gradScale));
      const v = op.add(op.mul(p.v, s(options.beta2)), op.mul(op.mul(p.grad, p.grad), squareScale));
      const denominator = op.add(op.sqrt(v), eps);
      const decayed = p.decay && options.weightDecay !== 0 ? op.mul(p.param, decayFactor) : p.param;
      const param = op.sub(decayed, op.mul(op.div(m, denominator), stepSize));
      return { param, m, v };
    });
    return { updates, gradNorm };
  });
}
