import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { postprocessCompletion, stopSequencesFor } from '../../../server/completion/postprocess';
import { buildFimPrompt } from '../../../server/completion/prompt';
import { defaultCompletionOptions, servingPromptBudget } from '../../../server/completion/provider';
import { cutAtStop, firstLineLogprob, smallModelThreads } from '../../../server/model/host';
import { stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { countParameters } from '../../../trainer/model/config';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { freshServerGhostText } from './session';

// The confidence gate over stdio: the model's suggestion shows only when its first line is at
// least `minConfidence` probable. The probability is taken from the engine's own decode of the
// same prompt in this process (reference.ts's decode, with its per-token log probabilities).

const text = 'export function add(a: number, b: number) {\n  return \n}\n';
const cursor = { line: 1, character: 9 };
const offset = text.indexOf('return ') + 'return '.length;

/** The engine's completion at the cursor (post-processed) and its first line's probability. */
async function engineDecode(modelDir: string): Promise<{ text: string | null; probability: number }> {
  const worker = EngineWorker.start();
  try {
    const tokenizer = await Tokenizer.load(modelDir);
    const checkpoint = await loadCheckpoint(modelDir);
    const threads = checkpoint.config.hiddenSize <= 512 ? smallModelThreads : undefined;
    const { id } = await worker.call('loadModel', modelDir, { loraInputs: true, threads });
    const prefix = text.slice(0, offset);
    const suffix = text.slice(offset);
    const prompt = buildFimPrompt(
      { prefix, suffix, languageId: 'typescript', snippets: [] },
      tokenizer,
      tokenizer.fim!,
      servingPromptBudget(
        checkpoint.config.maxPositionEmbeddings,
        defaultCompletionOptions.maxNewTokens,
        countParameters(checkpoint.config),
      ),
    );
    const stop = stopSequencesFor(prefix, suffix);
    const result = await worker.call('generate', id, {
      prompt: Array.from(prompt.tokens),
      maxTokens: defaultCompletionOptions.maxNewTokens,
      eosTokenIds: stopTokenIds(tokenizer, checkpoint.config.eosTokenId),
      stop,
    });
    const raw = result.text ?? cutAtStop(tokenizer.decode(result.tokens), stop);
    const completion = postprocessCompletion({
      prefix,
      suffix,
      completion: raw,
      maxLines: defaultCompletionOptions.maxLines,
    });
    return {
      text: completion === '' ? null : completion,
      probability: Math.exp(firstLineLogprob(result.tokens, result.logprobs, (ids) => tokenizer.decode(ids))),
    };
  } finally {
    await worker.terminate();
  }
}

describe('language server: the confidence gate over stdio (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;
  let modelDir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-confidence-'));
    modelDir = (await makePrintableModel(path.join(dir, 'model'))).dir;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A fresh server (nothing cached) with this threshold and recall off; its ghost text. */
  function ghostText(minConfidence: number): Promise<string | null> {
    const completion = { minConfidence, recall: false, prompt: 'fim' as const };
    return freshServerGhostText(dir, { baseModelPath: modelDir, completion }, path.join(dir, 'add.ts'), text, cursor);
  }

  it('shows the suggestion with minConfidence 0 and hides it with minConfidence 1', async () => {
    const shown = await ghostText(0);
    assert.ok(shown, 'a suggestion with the gate open');
    assert.equal(await ghostText(1), null);
  });

  it("gates on the first line's probability: shown below it, hidden above it", async () => {
    const engine = await engineDecode(modelDir);
    assert.ok(engine.text, 'the engine decodes something at the cursor (else the check proves little)');
    assert.ok(engine.probability > 0 && engine.probability < 0.5, `first-line probability ${engine.probability}`);
    assert.equal(await ghostText(engine.probability / 2), engine.text);
    assert.equal(await ghostText(engine.probability * 2), null);
  });
});
