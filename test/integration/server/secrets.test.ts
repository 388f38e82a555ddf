import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildFimPrompt } from '../../../server/completion/prompt';
import { defaultCompletionOptions, servingPromptBudget } from '../../../server/completion/provider';
import { loadCheckpoint, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { countParameters } from '../../../trainer/model/config';
import { TrainingSession } from '../../../trainer/training/ort/session';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { plantedSecrets } from '../../fixtures/mining/planted-secrets';
import { engineCompletion } from './reference';
import { inlineCompletion, openDocument, startServer, stopServer, waitForModel } from './session';

// Secrets never reach suggestions: a model that has memorised a credential (full fine-tuning here,
// on the exact prompt the server builds) is served by the real server, which withholds that
// suggestion and logs only its kind, while the same model's memorised harmless line is shown.

interface Case {
  file: string;
  text: string;
  offset: number;
  /** What the model is taught to put at the cursor. */
  middle: string;
}

function caseAt(file: string, before: string, middle: string, after: string): Case {
  return { file, text: before + after, offset: before.length, middle };
}

describe('language server: a memorised credential is never suggested', function () {
  this.timeout(180_000);
  const key = plantedSecrets().find((secret) => secret.kind === 'aws-access-key-id')!.canary;
  const secret = caseAt('aws.ts', "export function awsClient() {\n  return { accessKeyId: '", key, "' };\n}\n");
  const harmless = caseAt(
    'region.ts',
    "export function awsRegion() {\n  return { regionName: '",
    'eu-west-1',
    "' };\n}\n",
  );
  let dir: string;
  let modelDir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-secrets-'));
    const base = await makePrintableModel(path.join(dir, 'base'));
    const { config, weights } = await loadCheckpoint(base.dir);
    // Each case as the server prompts it (no other document open: no context snippets), then
    // the middle and the end of text; only those are targets.
    const rows = [secret, harmless].map((c) => {
      const prompt = buildFimPrompt(
        { prefix: c.text.slice(0, c.offset), suffix: c.text.slice(c.offset), languageId: 'typescript', snippets: [] },
        base.tokenizer,
        base.tokenizer.fim!,
        servingPromptBudget(
          config.maxPositionEmbeddings,
          defaultCompletionOptions.maxNewTokens,
          countParameters(config),
        ),
      );
      const answer = [...base.tokenizer.encode(c.middle), base.tokenizer.eos!];
      return { tokens: [...prompt.tokens, ...answer], targetsFrom: prompt.tokens.length };
    });
    const width = Math.max(...rows.map((r) => r.tokens.length));
    const seqLen = width - 1;
    const tokens = new Int32Array(rows.length * width).fill(base.tokenizer.eos!);
    const lossMask = new Float32Array(rows.length * seqLen);
    rows.forEach((row, b) => {
      tokens.set(row.tokens, b * width);
      for (let t = row.targetsFrom; t < row.tokens.length; t++) lossMask[b * seqLen + t - 1] = 1;
    });
    const session = await TrainingSession.create(config, weights, {
      trainable: { method: 'full' },
      batch: rows.length,
      seqLen,
      threads: 1,
    });
    modelDir = path.join(dir, 'memorised');
    try {
      for (let round = 0; round < 6; round++) {
        for (let step = 0; step < 40; step++) await session.step({ tokens, lossMask }, 3e-3);
        fs.rmSync(modelDir, { recursive: true, force: true });
        await saveCheckpoint(modelDir, config, new Map([...weights, ...Object.entries(session.getTrainable())]));
        fs.copyFileSync(path.join(base.dir, 'tokenizer.json'), path.join(modelDir, 'tokenizer.json'));
        const [s, h] = [
          await engineCompletion(modelDir, null, secret),
          await engineCompletion(modelDir, null, harmless),
        ];
        if (s === key && h === harmless.middle) break;
      }
    } finally {
      await session.release();
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('the engine alone would complete the key (else this proves nothing); the server withholds it and shows the harmless line', async () => {
    assert.equal(await engineCompletion(modelDir, null, secret), key, 'the model memorised the key');
    assert.equal(
      await engineCompletion(modelDir, null, harmless),
      harmless.middle,
      'the model memorised the harmless line',
    );
    const session = await startServer(dir, { settings: { baseModelPath: modelDir } });
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      const position = (c: Case) => {
        const lines = c.text.slice(0, c.offset).split('\n');
        return [lines.length - 1, lines[lines.length - 1].length] as const;
      };
      const harmlessUri = openDocument(session, path.join(dir, harmless.file), harmless.text);
      const shown = await inlineCompletion(session, harmlessUri, ...position(harmless));
      assert.deepEqual(
        shown?.items.map((item) => item.insertText),
        [harmless.middle],
      );
      // One document open at a time: the prompt is the one the model learnt.
      void session.connection.sendNotification('textDocument/didClose', { textDocument: { uri: harmlessUri } });
      const secretUri = openDocument(session, path.join(dir, secret.file), secret.text);
      const withheld = await inlineCompletion(session, secretUri, ...position(secret));
      assert.ok(withheld === null || withheld.items.length === 0, `suggested: ${JSON.stringify(withheld)}`);
      assert.ok(
        session.logs.some((line) => /looked like a credential \(aws-access-key-id\) was withheld/.test(line)),
        session.logs.join('\n'),
      );
      const everything = [...session.logs, ...session.stderr].join('\n');
      assert.ok(!everything.includes(key) && !everything.includes(key.slice(4, 14)), 'the key is in no log');
    } finally {
      await stopServer(session);
    }
  });
});
