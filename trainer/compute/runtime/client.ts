import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { WorkerHandlers } from './handlers';
import type { Request, Response, WorkerData } from './protocol';

// The main thread's handle on the engine worker: typed calls into the WorkerHandlers (handlers.ts).
// Errors thrown in the worker are re-thrown here with the worker's message; if the worker dies,
// every pending call is rejected with the reason.

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void; method: string };

export interface EngineWorkerOptions {
  /** Worker entry file; found next to this module (sources) or in the bundle (dist/runtime/worker.js). */
  entry?: string;
}

/** Where the worker entry is: trainer/worker.ts under tsx, else the esbuild bundle's dist/runtime/worker.js. */
export function workerEntry(): { file: string; fromSource: boolean } {
  const fromSource = __filename.endsWith('.ts');
  const candidates = fromSource
    ? [path.join(__dirname, '..', '..', 'worker.ts')]
    : [
        path.join(__dirname, 'runtime', 'worker.js'),
        path.join(__dirname, '..', 'runtime', 'worker.js'),
        path.join(__dirname, 'worker.js'),
      ];
  const file = candidates.find((c) => fs.existsSync(c));
  if (!file) throw new Error(`engine worker entry not found (looked for ${candidates.join(', ')}); run npm run build`);
  return { file, fromSource };
}

export class EngineWorker {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private failure: Error | undefined;
  /** Requests the worker has not answered yet, including those already rejected here. */
  private unanswered = 0;
  private whenAnswered: (() => void) | undefined;
  private exited = false;

  private constructor(
    private readonly worker: Worker,
    /** Set to 1 on terminate: the worker then answers queued requests without running them. */
    private readonly stopFlag: Int32Array,
  ) {
    worker.on('message', (response: Response) => this.settle(response));
    worker.on('error', (error) => this.fail(new Error(`engine worker crashed: ${error.message}`)));
    worker.on('exit', (code) => {
      this.exited = true;
      this.whenAnswered?.();
      this.fail(new Error(`engine worker exited (code ${code})`));
    });
  }

  static start(options: EngineWorkerOptions = {}): EngineWorker {
    const { file, fromSource } = options.entry
      ? { file: options.entry, fromSource: options.entry.endsWith('.ts') }
      : workerEntry();
    const stopFlag = new Int32Array(new SharedArrayBuffer(4));
    const workerData: WorkerData = { stopFlag };
    if (!fromSource) return new EngineWorker(new Worker(file, { workerData }), stopFlag);
    // From sources (tests, the CLI in a checkout): Node 20 does not apply `--import tsx` hooks to a
    // worker's entry, so a one-line bootstrap registers tsx's CommonJS hooks in the worker first.
    // createRequire keeps esbuild from trying to bundle tsx (never reached from the bundle).
    const tsxHooks = createRequire(__filename).resolve('tsx/cjs');
    const bootstrap = `require(${JSON.stringify(tsxHooks)}); require(${JSON.stringify(file)});`;
    return new EngineWorker(new Worker(bootstrap, { eval: true, workerData }), stopFlag);
  }

  /** Calls `method` in the worker. Arguments are copied (structured clone); results are moved. */
  call<K extends keyof WorkerHandlers>(
    method: K,
    ...args: Parameters<WorkerHandlers[K]>
  ): Promise<Awaited<ReturnType<WorkerHandlers[K]>>> {
    return this.send(method, args, []) as Promise<Awaited<ReturnType<WorkerHandlers[K]>>>;
  }

  /** Like call, but moves `transfer` (ArrayBuffers inside the arguments) instead of copying them. */
  callTransfer<K extends keyof WorkerHandlers>(
    method: K,
    transfer: ArrayBuffer[],
    ...args: Parameters<WorkerHandlers[K]>
  ): Promise<Awaited<ReturnType<WorkerHandlers[K]>>> {
    return this.send(method, args, transfer) as Promise<Awaited<ReturnType<WorkerHandlers[K]>>>;
  }

  /**
   * Stops the worker; pending calls are rejected at once. The thread itself is stopped only after
   * its current ONNX Runtime call returns: terminating a thread inside a native run() aborts the
   * whole process (onnxruntime-node throws a C++ exception into a dying environment). Queued
   * requests are answered without running, so the wait is at most one call.
   */
  async terminate(): Promise<void> {
    if (this.exited) return;
    Atomics.store(this.stopFlag, 0, 1);
    this.fail(new Error('engine worker terminated'));
    if (this.unanswered > 0) await new Promise<void>((resolve) => (this.whenAnswered = resolve));
    await this.worker.terminate();
  }

  /** Lets the process exit while the worker is idle (for long-lived servers, keep it referenced). */
  unref(): void {
    this.worker.unref();
  }

  private send(method: string, args: unknown[], transfer: ArrayBuffer[]): Promise<unknown> {
    if (this.failure) return Promise.reject(new Error(`${method}: ${this.failure.message}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      const request: Request = { id, method, args };
      try {
        this.worker.postMessage(request, transfer);
        this.unanswered++;
      } catch (error) {
        this.pending.delete(id);
        reject(new Error(`${method}: cannot send arguments to the engine worker (${(error as Error).message})`));
      }
    });
  }

  private settle(response: Response): void {
    this.unanswered--;
    if (this.unanswered === 0) this.whenAnswered?.();
    const pending = this.pending.get(response.id);
    if (!pending) return;
    this.pending.delete(response.id);
    if ('error' in response) {
      const error = new Error(response.error.message);
      if (response.error.stack) error.stack = `${response.error.stack}\n    at EngineWorker.call(${pending.method})`;
      pending.reject(error);
    } else {
      pending.resolve(response.result);
    }
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      pending.reject(new Error(`${pending.method}: ${error.message}`));
    }
  }
}
