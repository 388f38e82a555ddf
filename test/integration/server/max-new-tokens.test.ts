import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { postprocessCompletion, stopSequencesFor } from '../../../server/completion/postprocess';
import { buildFimPrompt, defaultPromptBudget } from '../../../server/completion/prompt';
import { defaultCompletionOptions, promptTokenBudget } from '../../../server/completion/provider';
import { cutAtStop, smallModelThreads } from '../../../server/model/host';
import { stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { EngineWorker } from '../../../trainer/compute/runtime/client';
import { countParameters } from '../../../trainer/model/config';
import { openCheckpoint } from '../../../trainer/model/lazy-weights';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { inlineCompletion, openDocument, startServer, stopServer, waitForModel } from './session';

// idiom.completion.maxNewTokens over stdio: the server's suggestion is the engine's decode of the
// same prompt cut at that many tokens (decoded in this process, the confidence gate off).

const text = 'export function add(a: number, b: number) {\n  return \n}\n';
const cursor = { line: 1, character: 9 };
const offset = text.indexOf('return ') + 'return '.length;

async function engineText(modelDir: string, maxTokens: number): Promise<string | null> {
  const worker = EngineWorker.start();
  try {
    const tokenizer = await Tokenizer.load(modelDir);
    const checkpoint = await openCheckpoint(modelDir);
    const threads = checkpoint.config.hiddenSize <= 512 ? smallModelThreads : undefined;
    const { id } = await worker.call('loadModel', modelDir, { loraInputs: true, threads });
    const prefix = text.slice(0, offset);
    const suffix = text.slice(offset);
    const prompt = buildFimPrompt(
      { prefix, suffix, languageId: 'typescript', snippets: [] },
      tokenizer,
      tokenizer.fim!,
      {
        ...defaultPromptBudget,
        maxTokens: promptTokenBudget(
          checkpoint.config.maxPositionEmbeddings,
          maxTokens,
          countParameters(checkpoint.config),
        ),
      },
    );
    const stop = stopSequencesFor(prefix, suffix);
    const result = await worker.call('generate', id, {
      prompt: Array.from(prompt.tokens),
      maxTokens,
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
    return completion === '' ? null : completion;
  } finally {
    await worker.terminate();
  }
}

describe('language server: idiom.completion.maxNewTokens over stdio (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;
  let modelDir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-max-new-tokens-'));
    modelDir = (await makePrintableModel(path.join(dir, 'model'))).dir;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function ghostText(maxNewTokens: number): Promise<string | null> {
    const session = await startServer(dir, {
      settings: {
        baseModelPath: modelDir,
        completion: { minConfidence: 0, recall: false, prompt: 'fim', maxNewTokens },
      },
    });
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const answer = await inlineCompletion(session, uri, cursor.line, cursor.character);
      return answer?.items[0]?.insertText ?? null;
    } finally {
      await stopServer(session);
    }
  }

  it('decodes at most maxNewTokens tokens; a value out of range means the default', async () => {
    const whole = await engineText(modelDir, defaultCompletionOptions.maxNewTokens);
    const cut = await engineText(modelDir, 2);
    assert.ok(cut, 'two tokens decode to some text');
    assert.notEqual(cut, whole, 'the default decodes past two tokens here (else the check proves nothing)');
    assert.equal(await ghostText(2), cut);
    assert.equal(await ghostText(0), whole);
  });
});
