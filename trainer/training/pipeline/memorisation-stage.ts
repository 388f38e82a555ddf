import type { MemorisationMetrics } from '../../adapters/manifest';
import type { EngineWorker } from '../../compute/runtime/client';
import { readMemoryFile } from '../../data/memory/file';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import {
  CANARY_REPEATS,
  canaryExamples,
  checkMemorisation,
  describeMemorisation,
  memorisationMetrics,
  runCanaries,
  type Canary,
  type CheckedModel,
} from '../eval/memorisation';
import type { TrainExample } from './batches';
import type { TrainEvent } from './events';
import type { RunFolder } from './run-folder';

// The memorisation check as two stages of `idiom train`: canaries join the training examples after
// the dataset is read (so they reach neither the .idiomds file nor the repository memory, and never
// the held-out split), and are measured after evaluation, before the adapter is saved and promoted.

export interface MemorisationOptions {
  /** Random candidates each canary is ranked among. Default 1000. */
  candidates?: number;
}

export interface PlantedCanaries {
  canaries: Canary[];
  examples: TrainExample[];
}

/** The run's canaries (kept in the run folder for --resume) and their training examples. */
export function plantCanaries(
  run: RunFolder,
  tokenizer: Tokenizer,
  options: MemorisationOptions | false | undefined,
  emit: (event: TrainEvent) => void,
): PlantedCanaries {
  const canaries = runCanaries(run.dir, options !== false, () => run.loadCheckpoint() !== null);
  if (canaries.length > 0)
    emit({
      type: 'log',
      message: `planted ${canaries.length} random canaries, ${CANARY_REPEATS} copies each, for the memorisation check`,
    });
  return { canaries, examples: canaryExamples(canaries, tokenizer) };
}

/** Measures the trained model's canaries and extraction prompts; null when the check is off. */
export async function memorisationStage(input: {
  run: RunFolder;
  worker: EngineWorker;
  canaries: PlantedCanaries;
  tokenizer: Tokenizer;
  model: () => Promise<CheckedModel>;
  options: MemorisationOptions | false | undefined;
  threads: number;
  emit: (event: TrainEvent) => void;
  signal?: AbortSignal;
}): Promise<MemorisationMetrics | null> {
  const { canaries } = input.canaries;
  if (input.options === false || canaries.length === 0) return null;
  input.emit({ type: 'evaluating', model: 'memorisation', fraction: 0 });
  const started = performance.now();
  const report = await checkMemorisation({
    worker: input.worker,
    model: await input.model(),
    tokenizer: input.tokenizer,
    canaries,
    documents: readMemoryFile(input.run.dir) ?? [],
    candidates: input.options?.candidates,
    threads: input.threads,
    signal: input.signal,
  });
  input.emit({ type: 'evaluating', model: 'memorisation', fraction: 1 });
  const metrics = memorisationMetrics(report);
  const kinds = report.extractionKinds.length > 0 ? ` (${[...new Set(report.extractionKinds)].join(', ')})` : '';
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  input.emit({ type: 'log', message: `${describeMemorisation(metrics)}${kinds}, ${seconds} s` });
  return metrics;
}
