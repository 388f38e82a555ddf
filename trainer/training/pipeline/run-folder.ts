import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncPath, writeTextAtomically } from '../../adapters/folder';
import { readSafetensors, serializeSafetensors, writeFileAtomically } from '../../model/safetensors';
import type { HostTensor } from '../../model/tensor';
import type { OptimizerState } from '../ort/session';
import type { LossPoint } from '../report/html';
import type { DataCursor } from './batches';

// One training run's folder under the registry's staging area (.idiom/staging/train-…/):
//   run.json                  what the run is (method, base, settings); written once at the start
//   dataset.idiomds           the mined, tokenised data, so a resumed run trains on the same rows
//   checkpoints/step-NNNNNNN/ trainable.safetensors, optimizer.safetensors (adam.m/…, adam.v/…), state.json
//   checkpoints/latest.json   names the newest complete checkpoint; replaced atomically
//   owner.json                pid of the process training now
// A checkpoint folder is written under a temporary name, fsynced and renamed, and only then named
// by latest.json, so a kill -9 at any moment leaves the previous checkpoint usable. The previous
// one is kept until the next is complete. The folder is deleted once the adapter is registered.

export const RUN_PREFIX = 'train-';
const INFO_FILE = 'run.json';
const OWNER_FILE = 'owner.json';
const DATASET_FILE = 'dataset.idiomds';
const CHECKPOINTS = 'checkpoints';
const LATEST = 'latest.json';
const STATE_FILE = 'state.json';
const TRAINABLE_FILE = 'trainable.safetensors';
const OPTIMIZER_FILE = 'optimizer.safetensors';
export const RUN_FORMAT_VERSION = 1;

export interface RunPlan {
  batch: number;
  seqLen: number;
  totalSteps: number;
  warmupSteps: number;
  /** Token slots (B·T) per second, measured before training (--minutes); null with a token budget. */
  measuredTokensPerSecond: number | null;
  rowsPerEpoch: number;
}

export interface CheckpointState {
  version: typeof RUN_FORMAT_VERSION;
  step: number;
  cursor: DataCursor;
  /** Shuffles are a function of (seed, epoch): this is the whole RNG state of the data order. */
  rng: { seed: number; epoch: number };
  tokens: number;
  seconds: number;
  plan: RunPlan;
  losses: LossPoint[];
  /** The run reached its last step (the checkpoint holds the final weights). */
  finished: boolean;
}

export interface RunCheckpoint {
  state: CheckpointState;
  trainable: Map<string, HostTensor>;
  optimizer: OptimizerState;
  dir: string;
}

export class RunFolder {
  private constructor(readonly dir: string) {}

  get datasetPath(): string {
    return path.join(this.dir, DATASET_FILE);
  }

  get id(): string {
    return path.basename(this.dir);
  }

  /** A new run folder in `stagingDir` with its run.json. */
  static create<T extends object>(stagingDir: string, info: T): RunFolder {
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
    const dir = path.join(stagingDir, `${RUN_PREFIX}${stamp}-${randomBytes(3).toString('hex')}`);
    fs.mkdirSync(path.join(dir, CHECKPOINTS), { recursive: true });
    const run = new RunFolder(dir);
    writeTextAtomically(
      path.join(dir, INFO_FILE),
      `${JSON.stringify({ version: RUN_FORMAT_VERSION, ...info }, null, 2)}\n`,
    );
    fsyncPath(stagingDir);
    run.claim();
    return run;
  }

  static open(dir: string): RunFolder {
    if (!fs.existsSync(path.join(dir, INFO_FILE)))
      throw new Error(`${dir}: not a training run folder (no ${INFO_FILE})`);
    return new RunFolder(dir);
  }

  /** Run folders in `stagingDir`, newest first, whose run.json satisfies `match`; owned by no live process. */
  static findResumable<T>(stagingDir: string, match: (info: T) => boolean): RunFolder[] {
    let names: string[];
    try {
      names = fs.readdirSync(stagingDir);
    } catch {
      return [];
    }
    const runs: RunFolder[] = [];
    for (const name of names
      .filter((n) => n.startsWith(RUN_PREFIX))
      .sort()
      .reverse()) {
      const run = new RunFolder(path.join(stagingDir, name));
      let info: T;
      try {
        info = run.info<T>();
      } catch {
        continue;
      }
      if (run.ownerAlive()) continue;
      if (match(info)) runs.push(run);
    }
    return runs;
  }

  info<T>(): T {
    const file = path.join(this.dir, INFO_FILE);
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { version?: number };
    if (json.version !== RUN_FORMAT_VERSION)
      throw new Error(`${file}: run format ${json.version}, expected ${RUN_FORMAT_VERSION}`);
    return json as T;
  }

  /** Marks this process as the one training in the folder. */
  claim(): void {
    writeTextAtomically(path.join(this.dir, OWNER_FILE), `${JSON.stringify({ pid: process.pid })}\n`);
  }

  /** Another live process trains in this folder (a dead owner's claim does not count). */
  ownerAlive(): boolean {
    try {
      const { pid } = JSON.parse(fs.readFileSync(path.join(this.dir, OWNER_FILE), 'utf8')) as { pid: number };
      if (pid === process.pid) return false;
      process.kill(pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }

  /** Writes a complete checkpoint, then points latest.json at it, then drops all but the previous one. */
  saveCheckpoint(
    state: CheckpointState,
    trainable: ReadonlyMap<string, HostTensor>,
    optimizer: OptimizerState,
  ): string {
    const root = path.join(this.dir, CHECKPOINTS);
    const name = `step-${String(state.step).padStart(7, '0')}`;
    const final = path.join(root, name);
    if (fs.existsSync(final) && this.latestName() === name) return final; // same step, same state
    const temp = path.join(root, `.${name}.tmp-${process.pid}-${randomBytes(3).toString('hex')}`);
    fs.mkdirSync(temp, { recursive: true });
    try {
      writeFileAtomically(path.join(temp, TRAINABLE_FILE), [serializeSafetensors(new Map(trainable))]);
      const moments = new Map<string, HostTensor>();
      for (const [key, tensor] of Object.entries(optimizer.m)) moments.set(`adam.m/${key}`, tensor);
      for (const [key, tensor] of Object.entries(optimizer.v)) moments.set(`adam.v/${key}`, tensor);
      writeFileAtomically(path.join(temp, OPTIMIZER_FILE), [
        serializeSafetensors(moments, { step: String(optimizer.step) }),
      ]);
      writeTextAtomically(path.join(temp, STATE_FILE), `${JSON.stringify(state)}\n`);
      fsyncPath(temp);
      fs.rmSync(final, { recursive: true, force: true });
      fs.renameSync(temp, final);
      fsyncPath(root);
    } catch (error) {
      fs.rmSync(temp, { recursive: true, force: true });
      throw error;
    }
    const previous = this.latestName();
    writeTextAtomically(path.join(root, LATEST), `${JSON.stringify({ checkpoint: name, step: state.step })}\n`);
    for (const entry of fs.readdirSync(root)) {
      if (entry === name || entry === previous || entry === LATEST) continue;
      fs.rmSync(path.join(root, entry), { recursive: true, force: true });
    }
    return final;
  }

  /**
   * The newest complete checkpoint (latest.json's, else the newest step folder that reads), or
   * null when none was written yet.
   */
  loadCheckpoint(): RunCheckpoint | null {
    const root = path.join(this.dir, CHECKPOINTS);
    const latest = this.latestName();
    const others = fs.existsSync(root)
      ? fs
          .readdirSync(root)
          .filter((n) => /^step-\d{7}$/.test(n) && n !== latest)
          .sort()
          .reverse()
      : [];
    const names = latest === null ? others : [latest, ...others];
    let firstError: Error | null = null;
    for (const name of names) {
      try {
        return this.readCheckpoint(path.join(root, name));
      } catch (error) {
        firstError ??= error as Error;
      }
    }
    if (firstError) throw firstError;
    return null;
  }

  private readCheckpoint(dir: string): RunCheckpoint {
    const fail = (why: string): never => {
      throw new Error(`${dir}: unusable checkpoint (${why})`);
    };
    let state: CheckpointState;
    try {
      state = JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as CheckpointState;
    } catch (error) {
      return fail(`state.json: ${(error as Error).message}`);
    }
    if (state.version !== RUN_FORMAT_VERSION || !Number.isInteger(state.step)) fail('state.json has no step');
    const trainable = new Map<string, HostTensor>();
    for (const [key, tensor] of readSafetensors(path.join(dir, TRAINABLE_FILE)).tensors) {
      trainable.set(key, { dtype: 'float32', shape: tensor.shape, data: tensor.toFloat32().slice() });
    }
    const file = readSafetensors(path.join(dir, OPTIMIZER_FILE));
    const m: Record<string, HostTensor> = {};
    const v: Record<string, HostTensor> = {};
    for (const [key, tensor] of file.tensors) {
      const host: HostTensor = { dtype: 'float32', shape: tensor.shape, data: tensor.toFloat32().slice() };
      if (key.startsWith('adam.m/')) m[key.slice(7)] = host;
      else if (key.startsWith('adam.v/')) v[key.slice(7)] = host;
    }
    const step = Number(file.metadata.step);
    if (!Number.isInteger(step)) fail('optimizer.safetensors has no step');
    return { state, trainable, optimizer: { step, m, v }, dir };
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private latestName(): string | null {
    try {
      const { checkpoint } = JSON.parse(fs.readFileSync(path.join(this.dir, CHECKPOINTS, LATEST), 'utf8')) as {
        checkpoint: string;
      };
      return /^step-\d{7}$/.test(checkpoint) ? checkpoint : null;
    } catch {
      return null;
    }
  }
}
