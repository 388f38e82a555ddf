import { strict as assert } from 'node:assert';
import { percentageOf, progressAfter } from '../../../server/training/progress';
import type { TrainEvent } from '../../../trainer/training/pipeline/events';
import type { TrainingProgress } from '../../../server/protocol';

const step = (stepNumber: number, totalSteps: number): TrainEvent => ({
  type: 'step',
  step: stepNumber,
  totalSteps,
  loss: 2.5,
  learningRate: 3e-4,
  tokens: stepNumber * 512,
  tokensPerSecond: 1000,
  elapsedSeconds: stepNumber,
  etaSeconds: totalSteps - stepNumber,
  fraction: stepNumber / totalSteps,
});

describe('training progress as a person follows it', () => {
  it('one overall fraction across the phases that only grows, with a line per event', () => {
    const events: TrainEvent[] = [
      { type: 'phase', phase: 'mining', message: 'mining /repo' },
      { type: 'phase', phase: 'tokenizing', message: '10 examples' },
      { type: 'phase', phase: 'compiling', message: 'graph' },
      { type: 'phase', phase: 'training', message: '4 steps' },
      step(1, 4),
      step(2, 4),
      step(4, 4),
      { type: 'checkpoint', step: 4, path: '/x' },
      { type: 'phase', phase: 'evaluating', message: 'held-out' },
      { type: 'evaluating', model: 'base', fraction: 0.5 },
      {
        type: 'metrics',
        model: 'base',
        metrics: { loss: 3, perplexity: 20, bitsPerByte: 1.2, exactMatch: 0.25, editSimilarity: 0.5 },
      },
      { type: 'phase', phase: 'saving', message: 'writing' },
    ];
    let progress: TrainingProgress | null = null;
    let percentage = 0;
    const seen: { fraction: number; percentage: number; message: string }[] = [];
    for (const event of events) {
      const next = progressAfter(progress, event);
      if (!next) continue;
      progress = next;
      percentage = percentageOf(next, percentage);
      seen.push({ fraction: next.fraction ?? -1, percentage, message: next.message });
    }
    const fractions = seen.map((s) => s.fraction);
    assert.deepEqual(
      fractions,
      [...fractions].sort((a, b) => a - b),
    );
    assert.ok(fractions.every((f) => f >= 0 && f <= 1));
    assert.equal(seen.length, events.length - 1, 'a checkpoint shows nothing new');
    assert.equal(seen[4].message, 'step 1/4 · loss 2.500 · 1000 tokens/s · 3 s left');
    assert.equal(seen[6].percentage, 85, 'the last step ends the training share');
    assert.equal(seen[9].message, 'base: held-out loss 3.000, exact match 25%');
    assert.equal(seen[10].percentage, 97);
  });

  it('a percentage never goes back, even when a phase restarts lower', () => {
    assert.equal(percentageOf({ phase: 'mining', message: '', fraction: 0 }, 40), 40);
    assert.equal(percentageOf({ phase: 'training', message: '', fraction: null }, 12), 12);
    assert.equal(percentageOf({ phase: 'saving', message: '', fraction: 1 }, 97), 100);
  });
});
