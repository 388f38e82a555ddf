// The reference a server answer is compared with: the same FIM prompt decoded by the engine in a
// worker of this test process (base, or base + the adapter in `adapterDir`), post-processed.
import { postprocessCompletion, stopSequencesFor } from '../../../server/completion/postprocess';
import { buildFimPrompt } from '../../../server/completion/prompt';
import { defaultCompletionOptions, servingPromptBudget } from '../../../server/completion/provider';
import { adapterMessage, cutAtStop, smallModelThreads } from '../../../server/model/host';
import { loadAdapter } from '../../../trainer/adapters/peft';
import { stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { countParameters } from '../../../trainer/model/config';
import { openCheckpoint } from '../../../trainer/model/lazy-weights';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';

export interface ReferenceOptions {
  /** `full`: `adapterDir` holds a full fine-tune (its own weights, decoded without LoRA inputs). */
  kind?: 'lora' | 'full';
  /** The precision the server serves at (default float32, what auto gives a small model). */
  precision?: 'float32' | 'int8' | 'int4';
  /** idiom.completion.maxNewTokens as the server gets it. */
  maxNewTokens?: number;
  /**
   * Text typed at the cursor after the request the prompt is built for: appended to that prompt,
   * as the server continues a fill-in-the-middle prompt while the user types (typing.ts).
   */
  typed?: string;
}

export async function engineCompletion(
  modelDir: string,
  adapterDir: string | null,
  document: { text: string; offset: number; languageId?: string },
  {
    kind = 'lora',
    precision = 'float32',
    maxNewTokens = defaultCompletionOptions.maxNewTokens,
    typed = '',
  }: ReferenceOptions = {},
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
    const suffix = document.text.slice(document.offset);
    const prompt = buildFimPrompt(
      {
        prefix: document.text.slice(0, document.offset),
        suffix,
        languageId: document.languageId ?? 'typescript',
        snippets: [],
      },
      tokenizer,
      tokenizer.fim!,
      servingPromptBudget(checkpoint.config.maxPositionEmbeddings, maxNewTokens, countParameters(checkpoint.config)),
    );
    const prefix = document.text.slice(0, document.offset) + typed;
    const result = await worker.call('generate', id, {
      prompt: [...Array.from(prompt.tokens), ...Array.from(tokenizer.encode(typed))],
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
