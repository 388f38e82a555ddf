import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { buildFimPrompt } from '../../../server/completion/prompt';
import { defaultCompletionOptions, servingPromptBudget } from '../../../server/completion/provider';
import { scoreRecalledLine } from '../../../server/completion/recall-check';
import { loadModel } from '../../../server/model/host';
import { loadAdapter, writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { countParameters } from '../../../trainer/model/config';
import { makePrintableModel, type PrintableModel } from '../../fixtures/e2e-model/printable-model';
import { initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { draftManifest, randomLoraTensors } from '../../unit/adapters/helpers';
import { inlineCompletion, openDocument, startServer, stopServer, uncheckedRecall, waitForModel } from './session';

// The recall check over stdio: recall proposes a line the open document already writes after the
// same context; the serving model (base + the registry's adapter) scores it, and a line it finds
// less likely than the threshold is hidden. The base alone is not asked. The threshold is placed between the model's own scores of two recalled lines, taken
// in this process from the same prompt the server builds.

/** A document whose last function repeats the first two up to the cursor, where `line` follows. */
function documentRecalling(line: string): { text: string; cursor: { line: number; character: number } } {
  const body = (name: string) => `function ${name}() {\n  const region = pick();\n  ${line}\n}\n\n`;
  const text = `${body('first')}${body('second')}function third() {\n  const region = pick();\n  \n}\n`;
  return { text, cursor: { line: 12, character: 2 } };
}

const LINES = ['audit.record(region);', "return store.flush(region, 'eu-west', 42);"];

describe('language server: the serving model checks a recalled line before it is shown', function () {
  this.timeout(60_000);
  let base: string;
  let root: string;
  let model: PrintableModel;
  const scores: number[] = [];

  before(async () => {
    base = tempDir('recall-check');
    model = await makePrintableModel(path.join(base, 'model'));
    root = initRepo(path.join(base, 'repo'));
    const registry = await Registry.open(root);
    const staging = registry.stagingPath();
    const targets = ['q_proj', 'v_proj'] as const;
    await writeAdapter(staging, {
      config: { r: 2, alpha: 4, targets: [...targets] },
      tensors: randomLoraTensors(model.config, 2, targets, 11),
      manifest: draftManifest({ base: { name: 'printable', sha256: (await loadCheckpoint(model.dir)).sha256 } }),
      baseConfig: model.config,
    });
    const id = (await registry.add(staging)).id;
    await registry.activate(id, 'complete');
    const loaded = await loadModel(model.dir);
    assert.ok(loaded.model, 'the fixture model loads');
    try {
      const adapter = await loadAdapter(registry.adapterPath(id), model.config);
      await loaded.model.setWeights({ kind: 'lora', id, adapter });
      for (const line of LINES) {
        const { text, cursor } = documentRecalling(line);
        const offset = text.split('\n').slice(0, cursor.line).join('\n').length + 1 + cursor.character;
        const prompt = buildFimPrompt(
          { prefix: text.slice(0, offset), suffix: text.slice(offset), languageId: 'typescript', snippets: [] },
          loaded.model.tokenizer,
          loaded.model.fim!,
          servingPromptBudget(
            loaded.model.contextLength,
            defaultCompletionOptions.maxNewTokens,
            countParameters(loaded.model.config),
          ),
        );
        scores.push((await scoreRecalledLine(loaded.model, prompt.tokens, line)).logprob);
      }
    } finally {
      await loaded.model.dispose();
    }
    assert.ok(Math.abs(scores[0] - scores[1]) > 0.2, `the model tells the lines apart (${scores.join(', ')})`);
  });
  after(() => removeDir(base));

  /** The ghost text at the recalled line; the model's own suggestions never pass minConfidence 1. */
  async function ghostText(
    line: string,
    recallMinLogprob: number | null,
    adapter: 'none' | undefined = undefined,
  ): Promise<string | null> {
    const session = await startServer(root, {
      ...(adapter ? { adapter } : {}),
      settings: {
        baseModelPath: model.dir,
        completion: { minConfidence: 1, recall: true, prompt: 'fim', ...uncheckedRecall, recallMinLogprob },
      },
    });
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const { text, cursor } = documentRecalling(line);
      const uri = openDocument(session, path.join(root, 'src', 'third.ts'), text);
      const answer = await inlineCompletion(session, uri, cursor.line, cursor.character);
      return answer?.items[0]?.insertText ?? null;
    } finally {
      await stopServer(session);
    }
  }

  it('shows both recalled lines with the check off', async () => {
    for (const line of LINES) assert.equal(await ghostText(line, null), line);
  });

  it('hides the line the model finds less likely and shows the likelier one', async () => {
    const threshold = (scores[0] + scores[1]) / 2;
    const likely = scores[0] > scores[1] ? 0 : 1;
    assert.equal(await ghostText(LINES[likely], threshold), LINES[likely]);
    assert.equal(await ghostText(LINES[1 - likely], threshold), null);
  });

  it('does not judge with the base alone, which has not learnt the repository', async () => {
    const threshold = Math.max(scores[0], scores[1]) + 1;
    for (const line of LINES) assert.equal(await ghostText(line, threshold, 'none'), line);
  });
});
