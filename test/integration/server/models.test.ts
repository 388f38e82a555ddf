import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  DownloadModelRequest,
  IdiomErrorCodes,
  ModelsRequest,
  type DownloadModelResult,
  type ModelsResult,
} from '../../../server/protocol';
import { countParameters, parseModelConfig } from '../../../trainer/model/config';
import { formatBytes, memoryNeeded } from '../../../trainer/model/hub/catalog';
import { int8OnlyConfigJson } from '../../fixtures/hub/int8-only-config';
import { startHubServer, type HubServer } from '../../fixtures/hub/hub-server';
import { initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';
import { tinyConfigJson } from '../../fixtures/tiny-config';
import { startServer, stopServer, waitFor, waitForModel, type Session } from './session';

// Idiom: Choose base model, as the extension drives it: list the models, download one from a local
// Hub with work-done progress, serve it; a model larger than memory is not loaded and what serves
// keeps serving; with no endpoint nothing is downloaded.
describe('language server: idiom/models and idiom/downloadModel', function () {
  this.timeout(120_000);
  let base: string;
  let hub: HubServer;
  let model: TinyModel;
  let session: Session;
  const savedHome = process.env.HF_HOME;

  before(async () => {
    base = tempDir('server-models');
    model = await makeTinyModel(path.join(base, 'source'));
    hub = await startHubServer();
    hub.add('tiny-org/tiny-coder', model.dir);
    // The server inherits this environment: its cache is the test's.
    process.env.HF_HOME = path.join(base, 'hf');
    session = await startServer(initRepo(path.join(base, 'repo')), { settings: { hubEndpoint: hub.endpoint } });
    await waitForModel(session);
  });
  after(async () => {
    if (savedHome === undefined) delete process.env.HF_HOME;
    else process.env.HF_HOME = savedHome;
    await stopServer(session);
    await hub.close();
    removeDir(base);
  });

  const configure = (settings: Record<string, unknown>) =>
    session.connection.sendNotification('workspace/didChangeConfiguration', { settings: { idiom: settings } });

  it('downloads a model with progress, lists it and serves it once chosen', async () => {
    const before = await session.connection.sendRequest(ModelsRequest, {});
    assert.equal(before.cacheDir, path.join(base, 'hf', 'hub'));
    assert.ok(!before.models.some((m) => m.source === 'hf-cache'));
    assert.equal(before.downloads, true);

    const result: DownloadModelResult = await session.connection.sendRequest(DownloadModelRequest, {
      id: 'tiny-org/tiny-coder',
      workDoneToken: 'download-1',
    });
    const kinds = session.progress.filter((p) => p.token === 'download-1').map((p) => p.value.kind);
    assert.equal(kinds[0], 'begin');
    assert.equal(kinds.at(-1), 'end');
    assert.ok(kinds.includes('report'), kinds.join());
    assert.equal(result.model.parameters, countParameters(model.config));
    assert.equal(result.model.problem, null);

    const listed: ModelsResult = await session.connection.sendRequest(ModelsRequest, {});
    const cached = listed.models.find((m) => m.source === 'hf-cache');
    assert.equal(cached?.path, result.model.path);
    assert.equal(cached?.fits, true);
    assert.equal(listed.memory.total, os.totalmem());

    await configure({ baseModelPath: result.model.path });
    const status = await waitFor('the downloaded model to serve', () =>
      session.statuses.find((s) => s.state === 'ready' && s.model?.path === result.model.path),
    );
    assert.equal(status.model?.path, result.model.path);
  });

  it('a model larger than memory is not loaded, in one line, and the served one stays', async () => {
    const served = session.statuses.at(-1)?.model?.path;
    assert.ok(served);
    const huge = path.join(base, 'hf', 'hub', 'models--tiny-org--huge', 'snapshots', 'a'.repeat(40));
    fs.mkdirSync(huge, { recursive: true });
    const json = tinyConfigJson({
      hidden_size: 16384,
      num_hidden_layers: 200,
      intermediate_size: 65536,
      vocab_size: 256000,
    });
    const config = parseModelConfig(json);
    // idiom.precision auto serves a model this size at int8; it does not fit even so.
    assert.ok(memoryNeeded(countParameters(config), config, 'int8') > os.totalmem());
    fs.writeFileSync(path.join(huge, 'config.json'), JSON.stringify(json));
    // No weights: the parameter count comes from config.json's shapes.
    fs.copyFileSync(path.join(model.dir, 'tokenizer.json'), path.join(huge, 'tokenizer.json'));

    const listed: ModelsResult = await session.connection.sendRequest(ModelsRequest, {});
    const entry = listed.models.find((m) => m.id === 'tiny-org/huge');
    assert.equal(entry?.fits, false);
    assert.match(entry?.problem ?? '', /^at int8 it needs [\d.]+ [GM]B of memory to serve; this machine has /);

    const logged = session.logs.length;
    await configure({ baseModelPath: huge });
    const line = await waitFor('the refusal', () => session.logs.slice(logged).find((l) => l.includes('not loading')));
    assert.match(line, /^not loading the base model: .*huge.*needs [\d.]+ [GM]B of memory to serve; this machine has/);
    const status = session.statuses.at(-1);
    assert.equal(status?.state, 'ready');
    assert.equal(status?.model?.path, served);
    assert.match(status?.message ?? '', /still serving/);
  });

  it('the download memory check assumes idiom.precision: int8 under auto, float32 when set', async () => {
    const json = int8OnlyConfigJson();
    const config = parseModelConfig(json);
    const parameters = countParameters(config);
    const source = path.join(base, 'int8-only');
    fs.mkdirSync(source);
    fs.writeFileSync(path.join(source, 'config.json'), JSON.stringify(json));
    for (const file of ['tokenizer.json', 'model.safetensors'])
      fs.copyFileSync(path.join(model.dir, file), path.join(source, file));
    hub.add('tiny-org/int8-only', source);
    const weights = () =>
      hub.requests.filter((r) => r.url.startsWith('/tiny-org/int8-only/resolve/') && r.url.endsWith('.safetensors'));

    await configure({ hubEndpoint: hub.endpoint, precision: 'float32' });
    await assert.rejects(
      session.connection.sendRequest(DownloadModelRequest, { id: 'tiny-org/int8-only' }),
      (error: { code: number; message: string }) => {
        assert.equal(error.code, IdiomErrorCodes.downloadFailed);
        assert.equal(
          error.message,
          `at float32 this model needs ${formatBytes(memoryNeeded(parameters, config, 'float32'))} of memory to serve; this machine has ${formatBytes(os.totalmem())}; not downloading its weights`,
        );
        return true;
      },
    );
    assert.deepEqual(weights(), []);

    await configure({ hubEndpoint: hub.endpoint, precision: 'auto' });
    const result: DownloadModelResult = await session.connection.sendRequest(DownloadModelRequest, {
      id: 'tiny-org/int8-only',
    });
    assert.equal(weights().length, 1);
    assert.ok(fs.existsSync(path.join(result.model.path, 'model.safetensors')));
  });

  it('with idiom.hubEndpoint empty a download is refused and nothing is requested', async () => {
    await configure({ hubEndpoint: '' });
    const requests = hub.requests.length;
    await assert.rejects(
      session.connection.sendRequest(DownloadModelRequest, { id: 'tiny-org/tiny-coder' }),
      (error: { code: number; message: string }) => {
        assert.equal(error.code, IdiomErrorCodes.notAvailable);
        assert.equal(error.message, 'model downloads are turned off (idiom.hubEndpoint is empty)');
        return true;
      },
    );
    assert.equal((await session.connection.sendRequest(ModelsRequest, {})).downloads, false);
    assert.equal(hub.requests.length, requests);
  });
});
