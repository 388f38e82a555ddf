// Training events (trainer/training/pipeline/events.ts) as a person follows them: one overall fraction
// across the phases, and one short line for the progress notification and the status bar.

import type { TrainEvent } from '../../trainer/training/pipeline/events';
import type { TrainingProgress } from '../protocol';

/** Where each phase starts on the overall 0..1 scale; training takes most of a run. */
const phaseStart: Record<TrainingProgress['phase'], number> = {
  mining: 0,
  tokenizing: 0.05,
  compiling: 0.08,
  training: 0.1,
  evaluating: 0.85,
  saving: 0.97,
};
const phaseEnd: Record<TrainingProgress['phase'], number> = {
  mining: 0.05,
  tokenizing: 0.08,
  compiling: 0.1,
  training: 0.85,
  evaluating: 0.97,
  saving: 1,
};

function within(phase: TrainingProgress['phase'], fraction: number): number {
  const clamped = Math.min(1, Math.max(0, fraction));
  return phaseStart[phase] + (phaseEnd[phase] - phaseStart[phase]) * clamped;
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

/** The progress after `event`, given the progress before it (null at the start); null when the event changes nothing shown. */
export function progressAfter(previous: TrainingProgress | null, event: TrainEvent): TrainingProgress | null {
  switch (event.type) {
    case 'phase':
      return { phase: event.phase, message: event.message, fraction: phaseStart[event.phase] };
    case 'step':
      return {
        phase: 'training',
        message: `step ${event.step}/${event.totalSteps} · loss ${event.loss.toFixed(3)} · ${Math.round(event.tokensPerSecond)} tokens/s · ${duration(event.etaSeconds)} left`,
        fraction: within('training', event.fraction),
      };
    case 'evaluating':
      return {
        phase: 'evaluating',
        message: `evaluating ${event.model} on the held-out commits`,
        fraction: within('evaluating', event.fraction),
      };
    case 'metrics':
      return (
        previous && {
          ...previous,
          message: `${event.model}: held-out loss ${event.metrics.loss.toFixed(3)}, exact match ${(event.metrics.exactMatch * 100).toFixed(0)}%`,
        }
      );
    case 'checkpoint':
    case 'log':
      return null;
  }
}

/** LSP work-done progress wants an integer percentage that never goes back. */
export function percentageOf(progress: TrainingProgress, previousPercentage: number): number {
  const percentage = progress.fraction === null ? previousPercentage : Math.floor(progress.fraction * 100);
  return Math.max(previousPercentage, Math.min(100, percentage));
}
