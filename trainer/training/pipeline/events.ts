import type { HeldOutMetrics } from '../../adapters/manifest';

// Progress of `idiom train`, as JSON lines on stdout (--json) and as the language server relays it.
// Phases match server/protocol.ts TrainingProgress.phase.

export type TrainPhase = 'mining' | 'tokenizing' | 'compiling' | 'training' | 'evaluating' | 'saving';

export type TrainEvent =
  | { type: 'phase'; phase: TrainPhase; message: string }
  | {
      type: 'step';
      step: number;
      totalSteps: number;
      loss: number;
      learningRate: number;
      /** Targets trained so far. */
      tokens: number;
      tokensPerSecond: number;
      elapsedSeconds: number;
      etaSeconds: number;
      /** step / totalSteps */
      fraction: number;
    }
  | { type: 'checkpoint'; step: number; path: string }
  | { type: 'evaluating'; model: string; fraction: number }
  | { type: 'metrics'; model: string; metrics: HeldOutMetrics }
  | { type: 'log'; message: string };

/** Thrown when a run is cancelled (abort signal / SIGINT); the run's checkpoint is usable with --resume. */
export class TrainingCancelledError extends Error {
  constructor(
    readonly checkpoint: string | null,
    readonly step: number,
    when?: string,
  ) {
    super(
      `training cancelled ${when ?? (step >= 0 ? `at step ${step}` : 'after training')}${checkpoint ? '; checkpoint kept, continue with --resume' : ''}`,
    );
    this.name = 'TrainingCancelledError';
  }
}
