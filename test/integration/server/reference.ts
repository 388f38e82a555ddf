// The reference a server answer is compared with: the same FIM prompt decoded by the engine in a
// worker of this test process (base, or base + the adapter in `adapterDir`), post-processed.
import { postprocessCompletion, stopSequencesFor } from '../../../server/completion/postprocess';
import { buildFimPrompt, defaultPromptBudget } from '../../../server/completion/prompt';
import { defaultCompletionOptions, promptTokenBudget } from '../../../server/completion/provider';
import { adapterMessage, cutAtStop, smallModelThreads } from '../../../server/model/host';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { countParameters } from '../../../trainer/model/config';
import { openCheckpoint } from '../../../trainer/model/lazy-weights';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';

/** `full`: `adapterDir` holds a full fine-tune (its own weights, decoded without LoRA inputs). */
export async function engineCompletion(
  modelDir: string,
  adapterDir: string | null,
  document: { text: string; offset: number; languageId?: string },
  kind: 'lora' | 'full' = 'lora',
  /** The precision the server serves at (default float32, what auto gives a small model). */
  precision: 'float32' | 'int8' | 'int4' = 'float32',
  /** idiom.completion.maxNewTokens as the server gets it. */
  maxNewTokens = defaultCompletionOptions.maxNewTokens,
): Promise<string | null> {
  const worker = EngineWorker.start();
  try {
    const tokenizer = await Tokenizer.load(modelDir);
    const checkpoint = await openCheckpoint(modelDir); // config and sha256; the worker reads the weights
    // The server's engine settings for a small model (same graph, same thread count: same floats).
    const threads = checkpoint.config.hiddenSize <= 512 ? smallModelThreads : undefined;
    const { id } =
      kind === 'full' && adapterDir
        ? await worker.call('loadModel', adapterDir, { threads, precision })
        : await worker.call('loadModel', modelDir, { loraInputs: true, threads, precision });
    if (adapterDir && kind === 'lora') {
      const adapter = await loadAdapter(adapterDir, checkpoint.config, { baseSha256: checkpoint.sha256 });
      await worker.call('setAdapter', id, adapterMessage(adapter));
    }
    const prefix = document.text.slice(0, document.offset);
    const suffix = document.text.slice(document.offset);
    const prompt = buildFimPrompt(
      { prefix, suffix, languageId: document.languageId ?? 'typescript', snippets: [] },
      tokenizer,
      tokenizer.fim!,
      {
        ...defaultPromptBudget,
        maxTokens: promptTokenBudget(
          checkpoint.config.maxPositionEmbeddings,
          maxNewTokens,
          countParameters(checkpoint.config),
        ),
      },
    );
    const result = await worker.call('generate', id, {
      prompt: Array.from(prompt.tokens),
      maxTokens: maxNewTokens,
      eosTokenIds: stopTokenIds(tokenizer, checkpoint.config.eosTokenId),
      // A full fine-tune's folder has no tokenizer.json: the engine returns ids, cut here.
      ...(kind === 'full' ? {} : { stop: stopSequencesFor(prefix, suffix) }),
    });
    const raw = result.text ?? cutAtStop(tokenizer.decode(result.tokens), stopSequencesFor(prefix, suffix));
    const completion = postprocessCompletion({
      prefix,
      suffix,
      completion: raw,
      maxLines: defaultCompletionOptions.maxLines,
    });
    return completion === '' ? null : completion;
  } finally {
    await worker.terminate();
  }
}
