import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { randomCheckpointWeights, saveCheckpoint } from '../../model/checkpoint';
import { loadModelConfig, type ModelConfig } from '../../model/config';
import { readSafetensors, serializeSafetensors, writeFileAtomically } from '../../model/safetensors';
import type { HostTensor } from '../../model/tensor';
import type { TrainableTensor } from '../ort/graph';
import { initLoraWeights } from '../ort/lora';
import type {
  EvaluationResult,
  OptimizerState,
  StepResult,
  TrainingBatch,
  TrainingOptions,
  WeightSource,
} from '../ort/trainer';
import { probeTorch, torchBackendDir } from './python';

// The PyTorch backend behind the same calls as the ONNX Runtime Trainer (trainer/training/ort/trainer.ts):
// a Python child process (trainer/training/torch/serve.py) holds the model, the trainable tensors and
// AdamW's moments on its device; each call is one JSON line each way. Batches travel inline
// (base64), tensors as safetensors files in a private temp folder. A fresh LoRA adapter is drawn
// here with initLoraWeights, so both backends start from identical A matrices for a seed.

export interface TorchTrainerOptions extends TrainingOptions {
  /** Interpreter; default $IDIOM_PYTHON, python3, /usr/bin/python3 (the first that imports torch). */
  python?: string;
  /** 'cpu', 'cuda', 'cuda:1'…; default cuda when PyTorch sees a GPU. */
  device?: string;
  /** bf16 autocast (frozen LoRA bases stored in bf16). Default: on for CUDA, off on the CPU. */
  amp?: 'bf16' | null;
  /** Fused AdamW (CUDA); default on for CUDA. */
  fused?: boolean;
  /** torch.compile the model (PyTorch ≥ 2). Default false. */
  compile?: boolean;
  /** Recompute each layer's activations in backward (less memory, ~30% more compute). */
  gradientCheckpointing?: boolean;
  /** DDP over this many local processes (nccl on CUDA, gloo on the CPU); `batch` is split across them. */
  processes?: number;
  /** Starting trainable tensors (PEFT keys / HF names); default a fresh adapter from `seed`. */
  initial?: ReadonlyMap<string, HostTensor>;
}

interface CreateResult {
  trainable: TrainableTensor[];
  trainableParameters: number;
  setupSeconds: number;
  device: string;
  torchVersion: string;
  threads: number;
  amp: string | null;
  fusedAdamW: boolean;
}

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };

/** The Python process and its one-line-per-message protocol. */
class StepServer {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly stderrTail: string[] = [];
  private exited: Error | null = null;
  readonly ready: Promise<{ torch: string; cuda: boolean }>;

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    let resolveReady!: (value: { torch: string; cuda: boolean }) => void;
    let rejectReady!: (error: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      let message: { id?: number; result?: unknown; error?: string; ready?: boolean; torch?: string; cuda?: boolean };
      try {
        message = JSON.parse(line);
      } catch {
        this.stderrTail.push(line);
        return;
      }
      if (message.ready) return resolveReady({ torch: message.torch ?? '', cuda: message.cuda === true });
      const waiter = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id!);
      if (message.error !== undefined) waiter.reject(new Error(`PyTorch backend: ${message.error}`));
      else waiter.resolve(message.result);
    });
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      if (process.env.IDIOM_TORCH_DEBUG) process.stderr.write(`[torch] ${line}\n`);
      this.stderrTail.push(line);
      if (this.stderrTail.length > 40) this.stderrTail.shift();
    });
    const fail = (error: Error) => {
      this.exited = error;
      rejectReady(error);
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    child.on('error', (error) =>
      fail(new Error(`PyTorch backend: cannot start ${child.spawnfile} (${error.message})`)),
    );
    child.on('exit', (code, signal) => {
      const last = this.stderrTail.filter((l) => l.trim()).pop();
      fail(new Error(`PyTorch backend exited (${signal ?? `code ${code}`})${last ? `: ${last.trim()}` : ''}`));
    });
  }

  call<T>(op: string, payload: Record<string, unknown> = {}): Promise<T> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.child.stdin.write(`${JSON.stringify({ id, op, ...payload })}\n`);
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    try {
      await this.call('release');
    } catch {
      // already gone
    }
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(timer);
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

export class TorchTrainer {
  private constructor(
    private readonly server: StepServer,
    private readonly tempDir: string,
    readonly config: ModelConfig,
    readonly trainable: readonly TrainableTensor[],
    readonly trainableParameters: number,
    readonly setupSeconds: number,
    /** e.g. 'cpu', 'cuda:0 (NVIDIA H200)'. */
    readonly device: string,
    readonly torchVersion: string,
    readonly threads: number,
  ) {}

  /** Starts the Python step server and builds the model from `source` with `options`. */
  static async create(source: WeightSource, options: TorchTrainerOptions): Promise<TorchTrainer> {
    const started = performance.now();
    const tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-torch-'));
    let server: StepServer | null = null;
    try {
      const { dir: checkpointDir, config } = await checkpointFolder(source, tempDir);
      const probe = await probeTorch({ python: options.python });
      if (!probe.ok) throw new Error(`PyTorch backend unavailable: ${probe.reason}`);
      const python = probe.python;
      const script = path.join(torchBackendDir(), 'serve.py');
      server = new StepServer(
        spawn(python, ['-u', '-B', script], { stdio: ['pipe', 'pipe', 'pipe'], env: process.env }),
      );
      await server.ready;

      let initial = options.initial;
      if (!initial && options.trainable.method === 'lora')
        initial = initLoraWeights(config, options.trainable.lora, options.seed ?? 0);
      let initialPath: string | null = null;
      if (initial) {
        initialPath = path.join(tempDir, 'initial.safetensors');
        writeFileAtomically(initialPath, [serializeSafetensors(new Map(initial))]);
      }
      const lora = options.trainable.method === 'lora' ? options.trainable.lora : null;
      const optimizer = options.optimizer ?? {};
      const created = await server.call<CreateResult>('create', {
        checkpointDir,
        initialPath,
        options: {
          method: options.trainable.method,
          lora: lora ? { targets: [...lora.targets], r: lora.r, alpha: lora.alpha } : null,
          batch: options.batch,
          seqLen: options.seqLen,
          seed: options.seed ?? 0,
          threads: options.threads ?? null,
          processes: options.processes ?? 1,
          device: options.device ?? null,
          amp: options.amp === undefined ? 'auto' : options.amp,
          fused: options.fused ?? null,
          compile: options.compile ?? false,
          gradientCheckpointing: options.gradientCheckpointing ?? false,
          lossRowsPerChunk: options.lossRowsPerChunk ?? null,
          // JSON has no Infinity: null in maxGradNorm means "no clipping".
          optimizer: { ...optimizer, ...(optimizer.maxGradNorm === Infinity ? { maxGradNorm: null } : {}) },
        },
      });
      if (initialPath) fs.rmSync(initialPath, { force: true });
      return new TorchTrainer(
        server,
        tempDir,
        config,
        created.trainable,
        created.trainableParameters,
        (performance.now() - started) / 1000,
        created.device,
        created.torchVersion,
        created.threads,
      );
    } catch (error) {
      server?.kill();
      fs.rmSync(tempDir, { recursive: true, force: true });
      throw error;
    }
  }

  /** One optimizer step (forward, backward, clipping, AdamW) at learning rate `learningRate`. */
  step(batch: TrainingBatch, learningRate: number): Promise<StepResult> {
    return this.server.call<StepResult>('step', { ...encodeBatch(batch), learningRate });
  }

  /** Loss of a batch under the current trainable tensors, without a step. */
  evaluate(batch: TrainingBatch): Promise<EvaluationResult> {
    return this.server.call<EvaluationResult>('evaluate', encodeBatch(batch));
  }

  /** The trainable tensors (float32): PEFT keys for LoRA, HF names in full mode. */
  async getTrainable(): Promise<Map<string, HostTensor>> {
    const file = path.join(this.tempDir, 'trainable.safetensors');
    await this.server.call('getTrainable', { path: file });
    try {
      return readFloat32(file);
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  async setTrainable(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    const file = path.join(this.tempDir, 'set-trainable.safetensors');
    writeFileAtomically(file, [serializeSafetensors(new Map(tensors))]);
    try {
      await this.server.call('setTrainable', { path: file });
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  async getOptimizerState(): Promise<OptimizerState> {
    const file = path.join(this.tempDir, 'optimizer.safetensors');
    const { step } = await this.server.call<{ step: number }>('getOptimizerState', { path: file });
    try {
      const m: Record<string, HostTensor> = {};
      const v: Record<string, HostTensor> = {};
      for (const [key, tensor] of readFloat32(file)) {
        if (key.startsWith('adam.m/')) m[key.slice(7)] = tensor;
        else if (key.startsWith('adam.v/')) v[key.slice(7)] = tensor;
      }
      return { step, m, v };
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  async setOptimizerState(state: OptimizerState): Promise<void> {
    const tensors = new Map<string, HostTensor>();
    for (const t of this.trainable) {
      if (!state.m[t.name] || !state.v[t.name]) throw new Error(`optimizer state is missing the moments of ${t.name}`);
      tensors.set(`adam.m/${t.name}`, state.m[t.name]);
      tensors.set(`adam.v/${t.name}`, state.v[t.name]);
    }
    const file = path.join(this.tempDir, 'set-optimizer.safetensors');
    writeFileAtomically(file, [serializeSafetensors(tensors)]);
    try {
      await this.server.call('setOptimizerState', { path: file, step: state.step });
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  /** Ends the Python process and removes the temp folder. */
  async release(): Promise<void> {
    try {
      await this.server.close();
    } finally {
      fs.rmSync(this.tempDir, { recursive: true, force: true });
    }
  }
}

/** A checkpoint folder Python can load: the given one, or `source`'s weights written under `tempDir`. */
async function checkpointFolder(source: WeightSource, tempDir: string): Promise<{ dir: string; config: ModelConfig }> {
  if ('checkpointDir' in source) return { dir: source.checkpointDir, config: loadModelConfig(source.checkpointDir) };
  const dir = path.join(tempDir, 'base');
  if ('random' in source) {
    const { config, seed, std } = source.random;
    await saveCheckpoint(dir, config, randomCheckpointWeights(config, seed, std === undefined ? {} : { std }));
    return { dir, config };
  }
  await saveCheckpoint(dir, source.config, new Map(Object.entries(source.weights)));
  return { dir, config: source.config };
}

function encodeBatch(batch: TrainingBatch): Record<string, string | null> {
  const bytes = (array: Int32Array | Float32Array) =>
    Buffer.from(array.buffer, array.byteOffset, array.byteLength).toString('base64');
  const ints = (values: Int32Array | number[]) =>
    bytes(values instanceof Int32Array ? values : Int32Array.from(values));
  return {
    tokens: ints(batch.tokens),
    lossMask: batch.lossMask
      ? bytes(batch.lossMask instanceof Float32Array ? batch.lossMask : Float32Array.from(batch.lossMask))
      : null,
    positions: batch.positions ? ints(batch.positions) : null,
  };
}

function readFloat32(file: string): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, tensor] of readSafetensors(file).tensors) {
    out.set(name, { dtype: 'float32', shape: [...tensor.shape], data: Float32Array.from(tensor.toFloat32()) });
  }
  return out;
}
