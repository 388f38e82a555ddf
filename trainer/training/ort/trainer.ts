import type { EngineWorker } from '../../compute/runtime/client';
import type { ModelConfig } from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import type { TrainableTensor } from './graph';
import type { WeightSource } from './handlers';
import type { EvaluationResult, OptimizerState, StepResult, TrainingBatch, TrainingOptions } from './session';

// The main thread's view of a training run: every call goes to the engine worker, where the
// session and the tensors live. This is what the train command uses.

export type { WeightSource } from './handlers';
export type { EvaluationResult, OptimizerState, StepResult, TrainingBatch, TrainingOptions } from './session';

export class Trainer {
  private constructor(
    private readonly worker: EngineWorker,
    private readonly id: number,
    readonly config: ModelConfig,
    readonly trainable: readonly TrainableTensor[],
    readonly trainableParameters: number,
    readonly setupSeconds: number,
    /** Matrix-product FLOPs of one step (trainer/compute/graph/flops.ts). */
    readonly flopsPerStep: { total: number; forward: number; backward: number },
  ) {}

  /** Builds the training graph for `options` in `worker` from `source`'s weights. */
  static async create(worker: EngineWorker, source: WeightSource, options: TrainingOptions): Promise<Trainer> {
    const created = await worker.call('trainingCreate', source, options);
    return new Trainer(
      worker,
      created.id,
      created.config,
      created.trainable,
      created.trainableParameters,
      created.setupSeconds,
      created.flopsPerStep,
    );
  }

  /** One optimizer step (forward, backward, clipping, AdamW) at learning rate `learningRate`. */
  step(batch: TrainingBatch, learningRate: number): Promise<StepResult> {
    return this.worker.call('trainingStep', this.id, batch, learningRate);
  }

  /** Loss of a batch under the current adapter, without a step (create with evaluation: true). */
  evaluate(batch: TrainingBatch): Promise<EvaluationResult> {
    return this.worker.call('trainingEvaluate', this.id, batch);
  }

  /** The trainable tensors: PEFT keys ([r, in] lora_A, [out, r] lora_B) or HF names in full mode. */
  async getTrainable(): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.worker.call('trainingGetTrainable', this.id)));
  }

  async setTrainable(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.worker.call('trainingSetTrainable', this.id, Object.fromEntries(tensors));
  }

  getOptimizerState(): Promise<OptimizerState> {
    return this.worker.call('trainingGetOptimizerState', this.id);
  }

  setOptimizerState(state: OptimizerState): Promise<void> {
    return this.worker.call('trainingSetOptimizerState', this.id, state);
  }

  release(): Promise<void> {
    return this.worker.call('trainingRelease', this.id);
  }
}
