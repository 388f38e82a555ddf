import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DownloadModelRequest, IdiomErrorCodes, StatusRequest } from '../../../server/protocol';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { startHubServer, type HubServer } from '../../fixtures/hub/hub-server';
import { removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { engineCompletion } from './reference';
import {
  inlineCompletion,
  openDocument,
  type Session,
  startServer,
  stopServer,
  waitFor,
  waitForModel,
} from './session';

// Weights that cannot serve, over stdio: a truncated or oversized safetensors, and the folder an
// interrupted download leaves. Each costs one line and the model serving keeps serving the same
// completion; a first load of a bad file says the same line with nothing serving.

describe('language server: bad weights and an interrupted download', function () {
  this.timeout(120_000);
  let base: string;
  let good: string;
  let hub: HubServer;
  let session: Session;
  const savedHome = process.env.HF_HOME;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  /** A copy of the good model under `name`, its model.safetensors changed by `change`. */
  function variant(name: string, change: (weights: string) => void): string {
    const at = path.join(base, name);
    fs.cpSync(good, at, { recursive: true });
    change(path.join(at, 'model.safetensors'));
    return at;
  }
  const truncate = (file: string) => fs.truncateSync(file, fs.statSync(file).size - 100);
  const extend = (file: string) => fs.appendFileSync(file, Buffer.alloc(64));

  before(async () => {
    base = tempDir('bad-weights');
    good = (await makePrintableModel(path.join(base, 'good'), { modelType: 'qwen2', seed: 7 })).dir;
    hub = await startHubServer();
    process.env.HF_HOME = path.join(base, 'hf');
    session = await startServer(base, { settings: { baseModelPath: good, hubEndpoint: hub.endpoint } });
    assert.equal((await waitForModel(session)).state, 'ready');
  });
  after(async () => {
    if (savedHome === undefined) delete process.env.HF_HOME;
    else process.env.HF_HOME = savedHome;
    await stopServer(session);
    await hub.close();
    removeDir(base);
  });

  /** Chooses `folder`, waits for the one refusal line, and checks that the good model still answers. */
  async function refused(folder: string, pattern: RegExp): Promise<void> {
    const uri = openDocument(session, path.join(base, 'add.ts'), text);
    const expected = await engineCompletion(good, null, { text, offset });
    assert.ok(expected, 'the good model completes something here (else the check proves little)');
    const before = session.logs.length;
    await session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { baseModelPath: folder, hubEndpoint: hub.endpoint } },
    });
    const line = await waitFor(`the refusal of ${path.basename(folder)}`, () =>
      session.logs.slice(before).find((entry) => entry.startsWith('not loading the base model: ')),
    );
    assert.match(line, pattern);
    assert.ok(!line.includes('\n'), line);
    const status = await session.connection.sendRequest(StatusRequest, {});
    assert.equal(status.state, 'ready');
    assert.equal(status.model?.path, good, 'the good model still serves');
    const answer = await inlineCompletion(session, uri, 1, 9);
    assert.deepEqual(
      answer?.items.map((item) => item.insertText),
      [expected],
    );
  }

  it('a truncated safetensors', async () => {
    await refused(
      variant('truncated', truncate),
      /truncated\/model\.safetensors: invalid safetensors: tensor ".*": data_offsets \[\d+, \d+\] out of bounds of the \d+-byte data buffer$/,
    );
  });

  it('an oversized safetensors', async () => {
    await refused(
      variant('oversized', extend),
      /oversized\/model\.safetensors: invalid safetensors: 64 bytes after the last tensor \(oversized\)$/,
    );
  });

  it('an interrupted download: one line for the request, and its folder is refused', async () => {
    const { commit } = hub.add('tiny-org/cut', good);
    hub.cutNext('model.safetensors');
    await assert.rejects(
      session.connection.sendRequest(DownloadModelRequest, { id: 'tiny-org/cut' }),
      (error: { code: number; message: string }) => {
        assert.equal(error.code, IdiomErrorCodes.downloadFailed);
        assert.match(error.message, /^download of model\.safetensors interrupted at .*; run it again to resume$/);
        return true;
      },
    );
    const snapshot = path.join(base, 'hf', 'hub', 'models--tiny-org--cut', 'snapshots', commit);
    assert.ok(fs.existsSync(path.join(snapshot, 'config.json')), 'the download got as far as config.json');
    await refused(snapshot, /snapshots\/[0-9a-f]{40}.*model\.safetensors/);
  });

  it('a bad file on a first load: the same line, and nothing serves', async () => {
    const first = await startServer(base, { settings: { baseModelPath: variant('oversized-first', extend) } });
    try {
      const status = await waitForModel(first);
      assert.equal(status.state, 'error');
      assert.match(
        status.message,
        /^cannot load the base model: .*oversized-first\/model\.safetensors: invalid safetensors: 64 bytes after the last tensor \(oversized\)$/,
      );
    } finally {
      await stopServer(first);
    }
  });
});
