// The server's handle on one training run in a child process (server/training/train-process.ts):
// progress events as they come, a cancel that stops at the next step (the run keeps a checkpoint),
// and a kill if the child does not stop in time.

import { fork, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { TrainEvent } from '../../trainer/training/pipeline/events';
import type { FromTrainer, ToTrainer, TrainJobOptions, TrainJobResult } from './messages';

export type TrainJobOutcome =
  | { kind: 'finished'; result: TrainJobResult }
  | { kind: 'cancelled'; message: string }
  | { kind: 'failed'; message: string };

/** How long a cancelled run may take to write its checkpoint and exit before it is killed. */
const cancelGraceMs = 30_000;

/** The child's entry: the .ts source under tsx, else train-process.js next to the server bundle. */
function trainProcessEntry(): { file: string; execArgv: string[] } {
  if (__filename.endsWith('.ts')) {
    // createRequire keeps esbuild from bundling tsx (never reached from the bundle).
    const tsx = createRequire(__filename).resolve('tsx/cjs');
    return { file: path.join(__dirname, 'train-process.ts'), execArgv: ['--require', tsx] };
  }
  const candidates = [path.join(__dirname, 'train-process.js'), path.join(__dirname, 'training', 'train-process.js')];
  const file = candidates.find((candidate) => fs.existsSync(candidate));
  if (!file) throw new Error(`training entry not found (looked for ${candidates.join(', ')}); run npm run build`);
  return { file, execArgv: [] };
}

export class TrainJob {
  readonly outcome: Promise<TrainJobOutcome>;
  private readonly child: ChildProcess;
  private cancelRequested = false;
  private killTimer: NodeJS.Timeout | undefined;

  private constructor(options: TrainJobOptions, onEvent: (event: TrainEvent) => void) {
    const entry = trainProcessEntry();
    this.child = fork(entry.file, [], {
      execArgv: entry.execArgv,
      serialization: 'advanced',
      // stdout is the LSP channel of the parent: the child's output goes to the parent's stderr.
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    this.child.stdout!.on('data', (chunk) => process.stderr.write(chunk));
    const stderrTail: string[] = [];
    this.child.stderr!.on('data', (chunk) => {
      process.stderr.write(chunk);
      stderrTail.push(String(chunk));
      if (stderrTail.length > 20) stderrTail.shift();
    });
    this.outcome = new Promise<TrainJobOutcome>((resolve) => {
      let settled: TrainJobOutcome | null = null;
      this.child.on('message', (message: FromTrainer) => {
        if (message.type === 'progress') onEvent(message.event);
        else if (message.type === 'result') settled = { kind: 'finished', result: message.result };
        else if (message.type === 'cancelled') settled = { kind: 'cancelled', message: message.message };
        else if (message.type === 'error') settled = { kind: 'failed', message: message.message };
      });
      this.child.on('error', (error) => {
        settled ??= { kind: 'failed', message: `cannot start the training process: ${error.message}` };
      });
      this.child.on('exit', (code, signal) => {
        clearTimeout(this.killTimer);
        if (settled) return resolve(settled);
        if (this.cancelRequested) return resolve({ kind: 'cancelled', message: 'training cancelled' });
        const last = stderrTail.join('').trim().split('\n').pop() ?? '';
        resolve({
          kind: 'failed',
          message: `the training process exited (${signal ?? `code ${code}`})${last ? `: ${last}` : ''}`,
        });
      });
    });
    this.post({ type: 'start', options });
  }

  static start(options: TrainJobOptions, onEvent: (event: TrainEvent) => void): TrainJob {
    return new TrainJob(options, onEvent);
  }

  /** Asks the run to stop at the next step; kills it if it has not exited after the grace period. */
  cancel(): void {
    if (this.cancelRequested) return;
    this.cancelRequested = true;
    this.post({ type: 'cancel' });
    this.killTimer = setTimeout(() => this.child.kill('SIGKILL'), cancelGraceMs);
    this.killTimer.unref();
  }

  /** Stops the run now (server shutdown). */
  kill(): void {
    this.cancelRequested = true;
    this.child.kill('SIGKILL');
  }

  private post(message: ToTrainer): void {
    if (this.child.connected) this.child.send(message, (error) => void error);
  }
}
