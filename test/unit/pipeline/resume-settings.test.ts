import { strict as assert } from 'node:assert';
import { DEFAULT_LORA } from '../../../trainer/model/lora';
import { settingsIgnoredOnResume } from '../../../trainer/training/pipeline/train-repository';

describe('pipeline: --resume keeps the run plan', () => {
  const planned = {
    budget: { minutes: 5 },
    seed: 1,
    lora: DEFAULT_LORA,
    learningRate: 3e-4,
    weightDecay: 0.1,
    maxEpochs: 3,
    batch: 16,
    seqLen: 256,
    threads: 2,
  };

  it('names each setting given now that differs from the plan', () => {
    const ignored = settingsIgnoredOnResume(
      { repo: '.', budget: { minutes: 20 }, lora: { r: 8 }, learningRate: 1e-3, batch: 8 },
      planned,
    );
    assert.deepEqual(ignored, ['budget', 'LoRA settings', 'learning rate', 'batch']);
  });

  it('says nothing for settings left out or repeated as planned', () => {
    assert.deepEqual(settingsIgnoredOnResume({ repo: '.', lora: {} }, planned), []);
    assert.deepEqual(
      settingsIgnoredOnResume({ repo: '.', budget: { minutes: 5 }, seed: 1, lora: { r: 16 }, threads: 2 }, planned),
      [],
    );
    assert.deepEqual(
      settingsIgnoredOnResume({ repo: '.', lora: {} }, { ...planned, lora: null }),
      [],
      'a full fine-tuning run and no LoRA flags',
    );
  });
});
