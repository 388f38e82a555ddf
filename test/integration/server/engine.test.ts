import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StatusRequest } from '../../../server/protocol';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { engineCompletion } from './reference';
import {
  cancelledInlineCompletion,
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  waitForModel,
} from './session';

describe('language server with the real engine (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-engine-'));
    await makePrintableModel(path.join(dir, 'model'), { modelType: 'qwen2', seed: 7 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('loads the model in the engine worker and answers inlineCompletion with what the engine decodes', async () => {
    const modelDir = path.join(dir, 'model');
    const session = await startServer(dir, { settings: { baseModelPath: modelDir } });
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.model?.path, modelDir);
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const result = await inlineCompletion(session, uri, 1, 9);
      // The same prompt, decoded by the engine in this process, post-processed the same way.
      const expected = await engineCompletion(modelDir, null, { text, offset });
      assert.ok(expected, 'this checkpoint decodes something at the cursor (else the check proves little)');
      assert.deepEqual(
        result?.items.map((item) => item.insertText),
        [expected],
      );
    } finally {
      await stopServer(session);
    }
  });

  it('gives no completion in a disabled language (markdown by default) until the setting allows it', async () => {
    const modelDir = path.join(dir, 'model');
    const session = await startServer(dir, { settings: { baseModelPath: modelDir } });
    try {
      await waitForModel(session);
      const uri = openDocument(session, path.join(dir, 'notes.md'), text, 'markdown');
      assert.equal(await inlineCompletion(session, uri, 1, 9), null);
      await session.connection.sendNotification('workspace/didChangeConfiguration', {
        settings: { idiom: { baseModelPath: modelDir, disabledLanguages: [] } },
      });
      const answer = await inlineCompletion(session, uri, 1, 9);
      assert.deepEqual(
        answer?.items.map((item) => item.insertText),
        [await engineCompletion(modelDir, null, { text, offset, languageId: 'markdown' })],
      );
    } finally {
      await stopServer(session);
    }
  });

  it('a cancelled completion is answered at once (null or RequestCancelled) and the next one is decoded', async () => {
    const modelDir = path.join(dir, 'model');
    const session = await startServer(dir, { settings: { baseModelPath: modelDir } });
    try {
      await waitForModel(session);
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const answer = await cancelledInlineCompletion(session, uri, 1, 9);
      assert.ok('value' in answer ? answer.value === null : answer.code === -32800, JSON.stringify(answer));
      const next = await inlineCompletion(session, uri, 1, 9);
      assert.deepEqual(
        next?.items.map((item) => item.insertText),
        [await engineCompletion(modelDir, null, { text, offset })],
      );
    } finally {
      await stopServer(session);
    }
  });
});
