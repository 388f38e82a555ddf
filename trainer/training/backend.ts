import type { ModelConfig } from '../model/config';
import type { EngineWorker } from '../compute/runtime/client';
import type { HostTensor } from '../model/tensor';
import type { TrainableTensor } from './ort/graph';
import {
  Trainer,
  type EvaluationResult,
  type OptimizerState,
  type StepResult,
  type TrainingBatch,
  type WeightSource,
} from './ort/trainer';
import { probeTorch, type ProbeOptions, type TorchProbe } from './torch-bridge/python';
import { TorchTrainer, type TorchTrainerOptions } from './torch-bridge/torch-trainer';

// Which engine trains: `--backend ort` ONNX Runtime (CPU, everywhere); `--backend torch` PyTorch
// (GPU or CPU) when a Python with torch is found, else ONNX Runtime with a one-line message;
// `--backend auto` PyTorch only when it sees a CUDA device (on the CPU our ONNX graphs are the
// default). Both engines expose the same step-level calls (StepTrainer), so the training loop,
// checkpoints, resume and evaluation do not care which one runs.

export type BackendRequest = 'auto' | 'ort' | 'torch';

export interface BackendSelection {
  backend: 'ort' | 'torch';
  /** For the manifest: 'cpu', or the CUDA device PyTorch will use. */
  device: string;
  /** Set when backend is torch. */
  python?: string;
  torchVersion?: string;
  /** One line for the user when the request could not be honoured (fell back) or auto picked torch; else null. */
  message: string | null;
}

/** The calls a training loop makes; Trainer (ONNX Runtime) and TorchTrainer both provide them. */
export interface StepTrainer {
  readonly config: ModelConfig;
  readonly trainable: readonly TrainableTensor[];
  readonly trainableParameters: number;
  readonly setupSeconds: number;
  step(batch: TrainingBatch, learningRate: number): Promise<StepResult>;
  evaluate(batch: TrainingBatch): Promise<EvaluationResult>;
  getTrainable(): Promise<Map<string, HostTensor>>;
  setTrainable(tensors: ReadonlyMap<string, HostTensor>): Promise<void>;
  getOptimizerState(): Promise<OptimizerState>;
  setOptimizerState(state: OptimizerState): Promise<void>;
  release(): Promise<void>;
}

export interface SelectOptions extends ProbeOptions {
  /** Replaces the real probe (tests of the decision table). */
  probe?: () => Promise<TorchProbe>;
}

export async function selectTrainingBackend(
  request: BackendRequest,
  options: SelectOptions = {},
): Promise<BackendSelection> {
  if (request !== 'auto' && request !== 'ort' && request !== 'torch') {
    throw new Error(`unknown backend "${String(request)}" (expected auto, ort or torch)`);
  }
  if (request === 'ort') return { backend: 'ort', device: 'cpu', message: null };
  const probe = await (options.probe ?? (() => probeTorch(options)))();
  if (request === 'auto') {
    if (probe.ok && probe.cuda) {
      return {
        backend: 'torch',
        device: cudaDevice(probe),
        python: probe.python,
        torchVersion: probe.torchVersion,
        message: `training on ${cudaDevice(probe)} with PyTorch ${probe.torchVersion}`,
      };
    }
    return { backend: 'ort', device: 'cpu', message: null };
  }
  if (!probe.ok)
    return {
      backend: 'ort',
      device: 'cpu',
      message: `PyTorch backend unavailable (${probe.reason}); training with ONNX Runtime on the CPU`,
    };
  return {
    backend: 'torch',
    device: probe.cuda ? cudaDevice(probe) : 'cpu',
    python: probe.python,
    torchVersion: probe.torchVersion,
    message: null,
  };
}

/**
 * Opens a training run on the selected engine: ONNX Runtime in `worker`, or a PyTorch process.
 * `torchOptions` adds the GPU options (amp, compile, gradient checkpointing) for PyTorch.
 */
export async function createStepTrainer(
  selection: BackendSelection,
  worker: EngineWorker,
  source: WeightSource,
  options: TorchTrainerOptions,
): Promise<StepTrainer> {
  if (selection.backend === 'ort') return Trainer.create(worker, source, options);
  return TorchTrainer.create(source, {
    ...options,
    python: options.python ?? selection.python,
    device: options.device ?? (selection.device === 'cpu' ? 'cpu' : 'cuda'),
  });
}

function cudaDevice(probe: Extract<TorchProbe, { ok: true }>): string {
  return probe.devices.length > 0 ? `cuda:0 (${probe.devices[0]})` : 'cuda:0';
}
