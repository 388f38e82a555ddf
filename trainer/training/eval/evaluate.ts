import type { HeldOutMetrics } from '../../adapters/manifest';
import type { LoraAdapter } from '../../compute/engine/weights';
import type { EngineWorker } from '../../compute/runtime/client';
import type { HostTensor } from '../../model/tensor';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { ModelConfig } from '../../model/config';
import { Evaluator } from './evaluator';
import type { HeldOutSet } from './held-out';

// Evaluates several models on one held-out set: the base and any LoRA adapters share one
// evaluator (adapters are feeds); each full fine-tune gets its own. Used by `idiom train` (base,
// new adapter, the adapter active before) and `idiom eval`.

export type ModelUnderTest =
  | { name: string; kind: 'base' }
  | { name: string; kind: 'lora'; adapter: LoraAdapter }
  | { name: string; kind: 'full'; checkpointDir: string }
  | { name: string; kind: 'full'; config: ModelConfig; weights: Record<string, HostTensor> };

export interface EvaluateModelsInput {
  worker: EngineWorker;
  baseDir: string;
  tokenizer: Tokenizer;
  newlineIds: number[];
  heldOut: HeldOutSet;
  /** Tokens per scoring row (T); rows hold T + 1 tokens. */
  seqLen: number;
  models: ModelUnderTest[];
  threads?: number;
  /** `model` is being evaluated; fraction of that model done. */
  onProgress?: (model: string, fraction: number) => void;
  signal?: AbortSignal;
}

export async function evaluateModels(input: EvaluateModelsInput): Promise<Map<string, HeldOutMetrics>> {
  const { worker, heldOut, tokenizer, newlineIds } = input;
  const longestPrompt = heldOut.lines.reduce((n, line) => Math.max(n, line.prompt.length + line.maxTokens), 0);
  const options = {
    seqLen: input.seqLen,
    maxContext: Math.max(longestPrompt, input.seqLen + 1),
    threads: input.threads,
  };
  const results = new Map<string, HeldOutMetrics>();
  const shared = input.models.filter((m) => m.kind !== 'full');
  if (shared.length > 0) {
    const evaluator = await Evaluator.create(
      worker,
      { checkpointDir: input.baseDir },
      { ...options, loraInputs: true },
      tokenizer,
      newlineIds,
    );
    try {
      for (const model of shared) {
        await evaluator.setAdapter(model.kind === 'lora' ? model.adapter : null);
        results.set(
          model.name,
          await evaluator.evaluate(heldOut, {
            signal: input.signal,
            onProgress: (f) => input.onProgress?.(model.name, f),
          }),
        );
      }
    } finally {
      await evaluator.release();
    }
  }
  for (const model of input.models) {
    if (model.kind !== 'full') continue;
    const source =
      'checkpointDir' in model
        ? { checkpointDir: model.checkpointDir }
        : { config: model.config, weights: model.weights };
    const evaluator = await Evaluator.create(worker, source, { ...options, loraInputs: false }, tokenizer, newlineIds);
    try {
      results.set(
        model.name,
        await evaluator.evaluate(heldOut, {
          signal: input.signal,
          onProgress: (f) => input.onProgress?.(model.name, f),
        }),
      );
    } finally {
      await evaluator.release();
    }
  }
  return results;
}
