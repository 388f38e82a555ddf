import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  AdaptersRequest,
  IdiomErrorCodes,
  RollbackRequest,
  SetModeRequest,
  StatusRequest,
  TrainRequest,
} from '../../../server/protocol';
import { cancelledInlineCompletion, openDocument, startServer, stopServer, waitFor } from './session';

describe('language server over stdio (idiom lsp --stdio)', function () {
  this.timeout(20_000);
  let root: string;

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('initializes, advertises inline completions, and answers them with nothing and a clear status when there is no model', async () => {
    const session = await startServer(root, { defaultModelPath: '' });
    try {
      assert.equal(session.capabilities.inlineCompletionProvider, true);
      const status = await waitFor('the no-model status', () => session.statuses.find((s) => s.state === 'no-model'));
      assert.match(status.message, /no model/);
      const uri = openDocument(
        session,
        path.join(root, 'a.ts'),
        'export function add(a: number, b: number) {\n  return \n}\n',
      );
      const result = await session.connection.sendRequest('textDocument/inlineCompletion', {
        textDocument: { uri },
        position: { line: 1, character: 9 },
        context: { triggerKind: 2 },
      });
      assert.equal(result, null);
      const current = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(current.state, 'no-model');
      assert.equal(current.mode, 'complete');
      assert.ok(
        session.logs.some((line) => /no model/.test(line)),
        session.logs.join('\n'),
      );
    } finally {
      await stopServer(session);
    }
  });

  it('a corrupt base model costs one clear error line and the server keeps answering', async () => {
    const modelDir = path.join(root, 'broken-model');
    fs.mkdirSync(modelDir);
    fs.writeFileSync(path.join(modelDir, 'config.json'), '{"model_type": "llama", "hidden_size": ');
    const session = await startServer(root, { settings: { baseModelPath: modelDir } });
    try {
      const status = await waitFor('the error status', () => session.statuses.find((s) => s.state === 'error'));
      assert.match(status.message, /config\.json: invalid JSON/);
      const errors = session.logs.filter((line) => line.includes('cannot load the base model'));
      assert.equal(errors.length, 1);
      assert.equal(errors[0].split('\n').length, 1, 'one line');
      const uri = openDocument(session, path.join(root, 'b.ts'), 'const x = ');
      const result = await session.connection.sendRequest('textDocument/inlineCompletion', {
        textDocument: { uri },
        position: { line: 0, character: 10 },
        context: { triggerKind: 1 },
      });
      assert.equal(result, null);
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).state, 'error');
    } finally {
      await stopServer(session);
    }
  });

  it('ignores a custom base model in an untrusted workspace and refuses to train there', async () => {
    const modelDir = path.join(root, 'broken-model');
    fs.mkdirSync(modelDir);
    fs.writeFileSync(path.join(modelDir, 'config.json'), 'not json');
    const session = await startServer(root, {
      settings: { baseModelPath: modelDir },
      trusted: false,
      defaultModelPath: '',
    });
    try {
      const status = await waitFor('the no-model status', () => session.statuses.find((s) => s.state === 'no-model'));
      assert.equal(status.trusted, false);
      assert.ok(!session.logs.some((line) => line.includes('cannot load')), 'the custom model was not even read');
      await assert.rejects(
        session.connection.sendRequest(TrainRequest, {}),
        (error: { code: number; message: string }) => {
          assert.equal(error.code, IdiomErrorCodes.untrusted);
          assert.match(error.message, /untrusted/);
          return true;
        },
      );
    } finally {
      await stopServer(session);
    }
  });

  it('switches modes, rejects unknown ones, and refuses to train without a base model; no registry is created by reading', async () => {
    const session = await startServer(root, { defaultModelPath: '' });
    try {
      const status = await session.connection.sendRequest(SetModeRequest, { mode: 'review' });
      assert.equal(status.mode, 'review');
      await waitFor('the mode notification', () => session.statuses.find((s) => s.mode === 'review'));
      await assert.rejects(
        session.connection.sendRequest(SetModeRequest, { mode: 'poetry' as never }),
        /unknown mode "poetry"/,
      );
      await assert.rejects(
        session.connection.sendRequest(TrainRequest, {}),
        (error: { code: number; message: string }) => {
          assert.equal(error.code, IdiomErrorCodes.noModel);
          assert.match(error.message, /no base model to train/);
          return true;
        },
      );
      assert.deepEqual(await session.connection.sendRequest(AdaptersRequest, {}), { adapters: [] });
      assert.ok(!fs.existsSync(path.join(root, '.idiom')), 'listing adapters creates nothing');
      await assert.rejects(
        session.connection.sendRequest(RollbackRequest, { mode: 'poetry' as never }),
        /unknown mode "poetry"/,
      );
    } finally {
      await stopServer(session);
    }
  });

  it('a cancelled inline completion request is answered and the server keeps serving', async () => {
    const session = await startServer(root, { defaultModelPath: '' });
    try {
      const uri = openDocument(session, path.join(root, 'c.ts'), 'let y = ');
      const answer = await cancelledInlineCompletion(session, uri, 0, 8);
      assert.ok('value' in answer ? answer.value === null : answer.code === -32800, JSON.stringify(answer));
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).state, 'no-model');
    } finally {
      await stopServer(session);
    }
  });
});
