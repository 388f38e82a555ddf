// Messages between the language server and its training child process (Node IPC, structured clone).
import type { TrainEvent } from '../../trainer/training/pipeline/events';
import type { TrainRepositoryOptions } from '../../trainer/training/pipeline/train-repository';

/** trainRepository's options that can cross a process boundary (no callbacks, no signal). */
export type TrainJobOptions = Omit<TrainRepositoryOptions, 'onProgress' | 'signal'>;

/** What the server learns when a run finishes (the fields its TrainResult and status need). */
export interface TrainJobResult {
  adapter: { id: string; path: string; method: 'lora' | 'full' };
  activated: boolean;
  promotionReason: string;
  tokens: number;
  seconds: number;
  steps: number;
  report: string | null;
}

export type ToTrainer = { type: 'start'; options: TrainJobOptions } | { type: 'cancel' };

export type FromTrainer =
  | { type: 'progress'; event: TrainEvent }
  | { type: 'result'; result: TrainJobResult }
  | { type: 'cancelled'; message: string; checkpoint: string | null }
  | { type: 'error'; message: string };
