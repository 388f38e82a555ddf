import { graphMatmulFlops } from '../../compute/graph/flops';
import { randomCheckpointWeights } from '../../model/checkpoint';
import { openCheckpoint } from '../../model/lazy-weights';
import type { ModelConfig } from '../../model/config';
import type { HostTensor } from '../../model/tensor';
import { type OptimizerState, type TrainingBatch, type TrainingOptions, TrainingSession } from './session';

// Training handlers, run inside the engine worker. Weights are loaded here (from a checkpoint
// folder, or generated) so hundreds of MB never cross the thread boundary.

export type WeightSource =
  | { checkpointDir: string }
  | { random: { config: ModelConfig; seed: number; std?: number } }
  | { config: ModelConfig; weights: Record<string, HostTensor> };

const runs = new Map<number, TrainingSession>();
let nextRunId = 1;

function runById(id: number): TrainingSession {
  const run = runs.get(id);
  if (!run) throw new Error(`no training run ${id} (released or never created)`);
  return run;
}

async function resolveWeights(
  source: WeightSource,
): Promise<{ config: ModelConfig; weights: ReadonlyMap<string, HostTensor> }> {
  if ('checkpointDir' in source) {
    // Read tensor by tensor as the graph takes them: the checkpoint is never in memory whole.
    const checkpoint = await openCheckpoint(source.checkpointDir);
    return { config: checkpoint.config, weights: checkpoint.weights };
  }
  if ('random' in source) {
    const { config, seed, std } = source.random;
    return { config, weights: randomCheckpointWeights(config, seed, std === undefined ? {} : { std }) };
  }
  return { config: source.config, weights: new Map(Object.entries(source.weights)) };
}

export const trainingHandlers = {
  async trainingCreate(source: WeightSource, options: TrainingOptions) {
    const started = performance.now();
    const { config, weights } = await resolveWeights(source);
    const run = await TrainingSession.create(config, weights, options);
    const id = nextRunId++;
    runs.set(id, run);
    const flops = graphMatmulFlops(run.built.graph, ['backward', 'adamw']);
    return {
      id,
      config,
      /** Matrix-product FLOPs per step (see trainer/compute/graph/flops.ts): total and backward share. */
      flopsPerStep: {
        total: flops.total,
        backward: flops.byScope.backward,
        forward: flops.total - flops.byScope.backward - flops.byScope.adamw,
      },
      trainable: run.built.trainable,
      trainableParameters: run.built.trainable.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0),
      setupSeconds: (performance.now() - started) / 1000,
    };
  },

  async trainingStep(id: number, batch: TrainingBatch, learningRate: number) {
    return runById(id).step(batch, learningRate);
  },

  async trainingEvaluate(id: number, batch: TrainingBatch) {
    return runById(id).evaluate(batch);
  },

  async trainingGetTrainable(id: number) {
    return runById(id).getTrainable();
  },

  async trainingSetTrainable(id: number, tensors: Record<string, HostTensor>) {
    runById(id).setTrainable(tensors);
  },

  async trainingGetOptimizerState(id: number) {
    return runById(id).getOptimizerState();
  },

  async trainingSetOptimizerState(id: number, state: OptimizerState) {
    runById(id).setOptimizerState(state);
  },

  async trainingRelease(id: number) {
    const run = runById(id);
    runs.delete(id);
    await run.release();
  },
};

type TrainingHandlers = typeof trainingHandlers;

// Registers these methods with the engine worker's typed client (see compute/runtime/handlers.ts).
declare module '../../compute/runtime/handlers' {
  interface WorkerHandlers extends TrainingHandlers {}
}
