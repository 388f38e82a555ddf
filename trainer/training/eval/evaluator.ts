import type { HeldOutMetrics } from '../../adapters/manifest';
import type { AdapterMessage } from '../../compute/engine/generation-handlers';
import type { LoraAdapter } from '../../compute/engine/weights';
import type { ModelConfig } from '../../model/config';
import type { EngineWorker } from '../../compute/runtime/client';
import type { Tokenizer } from '../../model/tokenizer/tokenizer';
import type { EvalCreateOptions, EvalWeightSource } from './handlers';
import type { HeldOutSet } from './held-out';
import { editSimilarity, heldOutMetrics, normalizeLine } from './metrics';

// The main thread's handle on one evaluator in the engine worker (trainer/training/eval/handlers.ts):
// scores the held-out windows and completes the held-out lines for the base, a LoRA adapter on
// that base, or a full fine-tune (its own evaluator), in small chunks so progress is reported and
// an abort takes effect between chunks.

export interface EvaluateOptions {
  /** Called after each chunk with the fraction done (0..1). */
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

const SCORE_CHUNK = 16;
const COMPLETE_CHUNK = 4;

export class Evaluator {
  private constructor(
    private readonly worker: EngineWorker,
    private readonly id: number,
    readonly config: ModelConfig,
    readonly sha256: string | null,
    private readonly tokenizer: Tokenizer,
    private readonly newlineIds: number[],
  ) {}

  static async create(
    worker: EngineWorker,
    source: EvalWeightSource,
    options: EvalCreateOptions,
    tokenizer: Tokenizer,
    newlineIds: number[],
  ): Promise<Evaluator> {
    const created = await worker.call('evalCreate', source, { vocabLimit: tokenizer.vocabSize, ...options });
    return new Evaluator(worker, created.id, created.config, created.sha256, tokenizer, newlineIds);
  }

  /** The adapter applied by the next evaluate() (null: the base alone). */
  async setAdapter(adapter: LoraAdapter | null): Promise<void> {
    await this.worker.call('evalSetAdapter', this.id, adapter ? adapterMessage(adapter) : null);
  }

  async evaluate(heldOut: HeldOutSet, options: EvaluateOptions = {}): Promise<HeldOutMetrics> {
    const total = heldOut.sequences.length + heldOut.lines.length * 4; // a line costs about four windows
    let done = 0;
    const progress = (n: number) => {
      done += n;
      options.onProgress?.(total > 0 ? Math.min(1, done / total) : 1);
    };
    let nll = 0;
    let tokens = 0;
    for (let first = 0; first < heldOut.sequences.length; first += SCORE_CHUNK) {
      options.signal?.throwIfAborted();
      const chunk = heldOut.sequences.slice(first, first + SCORE_CHUNK);
      const scored = await this.worker.call('evalScore', this.id, chunk);
      for (let i = 0; i < chunk.length; i++) {
        nll += scored.nll[i];
        tokens += scored.counts[i];
      }
      progress(chunk.length);
    }
    // Every special token ends a completion (eos, FIM markers, file separator), as in the server.
    const eos = [...this.tokenizer.specialIds];
    let exact = 0;
    let similarity = 0;
    for (let first = 0; first < heldOut.lines.length; first += COMPLETE_CHUNK) {
      options.signal?.throwIfAborted();
      const chunk = heldOut.lines.slice(first, first + COMPLETE_CHUNK);
      const outputs = await this.worker.call(
        'evalComplete',
        this.id,
        chunk.map((line) => ({ prompt: line.prompt, maxTokens: line.maxTokens })),
        eos,
        this.newlineIds,
      );
      chunk.forEach((line, i) => {
        const got = normalizeLine(this.tokenizer.decode(outputs[i]));
        const want = normalizeLine(line.expected);
        if (got === want) exact++;
        similarity += editSimilarity(got, want);
      });
      progress(chunk.length * 4);
    }
    return heldOutMetrics({ nll, tokens, bytes: heldOut.bytes }, { lines: heldOut.lines.length, exact, similarity });
  }

  async release(): Promise<void> {
    await this.worker.call('evalRelease', this.id);
  }
}

export function adapterMessage(adapter: LoraAdapter): AdapterMessage {
  const modules: AdapterMessage['modules'] = {};
  for (const [name, module] of adapter.modules) modules[name] = { a: module.a, b: module.b };
  return { scaling: adapter.scaling, modules };
}
