import { Graph } from '../../compute/graph/graph';
import * as op from '../../compute/graph/ops';
import { buildForward, loraInputName } from '../../compute/engine/llama';
import { type ModelConfig, PROJECTIONS, projectionModule, projectionShape } from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import type { LoraAdapter } from '../../compute/engine/weights';

// The scoring graph of evaluation: forward (trainer/compute/engine/llama.ts) → per-token negative log
// likelihood of each next token. LoRA A/B of every projection are inputs with one symbolic rank,
// so the base (rank 0) and any adapter score in the same session; the adapter's scaling is folded
// into B when it is fed. A full fine-tune gets a session of its own (other frozen weights).

export const SCORE_IO = {
  targets: 'targets',
  nll: 'nll',
} as const;

export interface ScoreGraphOptions {
  /** T: tokens per row (inputs; targets are the next tokens). */
  seqLen: number;
  /** Adds LoRA inputs on every projection. */
  loraInputs: boolean;
  /** Normalise over the first `vocabLimit` ids only (the tokenizer's; a model vocabulary may be padded). */
  vocabLimit?: number;
}

/**
 * Inputs: input_ids / position_ids / targets int64 [B, T] (B symbolic), LoRA A [R, in] / B [out, R].
 * Output: nll [B, T] = −log softmax(logits)[target].
 */
export function buildScoreGraph(
  cfg: ModelConfig,
  weights: ReadonlyMap<string, HostTensor>,
  options: ScoreGraphOptions,
): Graph {
  const graph = new Graph('score');
  const forward = buildForward(graph, cfg, weights, {
    batch: 'batch',
    seqLen: options.seqLen,
    dtype: 'float32',
    lora: options.loraInputs ? { targets: PROJECTIONS, rank: 'lora_rank', scaling: 1 } : undefined,
    fusedKernels: true,
  });
  const targets = graph.input(SCORE_IO.targets, 'int64', ['batch', options.seqLen]);
  const limit = options.vocabLimit ?? cfg.vocabSize;
  const logits = limit < cfg.vocabSize ? op.slice(forward.logits, [2], [0], [limit]) : forward.logits; // [B, T, V']
  const logProbs = op.logSoftmax(logits, -1); // [B, T, V']
  const picked = op.gatherElements(logProbs, op.unsqueeze(targets, [-1]), -1); // [B, T, 1]
  graph.output(op.neg(op.squeeze(picked, [-1])), SCORE_IO.nll); // [B, T]
  return graph;
}

/**
 * LoRA feeds of a score graph: for each projection of each layer A [r, in] and scaling·B [out, r];
 * rank-0 tensors where the adapter has no module (and everywhere for the base).
 */
export function scoreLoraFeeds(cfg: ModelConfig, adapter: LoraAdapter | null): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const projection of PROJECTIONS) {
      const module = projectionModule(layer, projection);
      const [outFeatures, inFeatures] = projectionShape(cfg, projection);
      const lora = adapter?.modules.get(module);
      if (!lora) {
        feeds[loraInputName(module, 'A')] = { dtype: 'float32', shape: [0, inFeatures], data: new Float32Array(0) };
        feeds[loraInputName(module, 'B')] = { dtype: 'float32', shape: [outFeatures, 0], data: new Float32Array(0) };
        continue;
      }
      const r = lora.a.shape[0];
      if (lora.a.shape[1] !== inFeatures || lora.b.shape[0] !== outFeatures || lora.b.shape[1] !== r) {
        throw new Error(
          `adapter ${module}: A [${lora.a.shape}] / B [${lora.b.shape}] do not fit [${outFeatures}, ${inFeatures}]`,
        );
      }
      const scaled = Float32Array.from(lora.b.data as Float32Array, (x) => x * adapter!.scaling);
      feeds[loraInputName(module, 'A')] = {
        dtype: 'float32',
        shape: [r, inFeatures],
        data: Float32Array.from(lora.a.data as Float32Array),
      };
      feeds[loraInputName(module, 'B')] = { dtype: 'float32', shape: [outFeatures, r], data: scaled };
    }
  }
  return feeds;
}
