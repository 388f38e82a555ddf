import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { countParameters, parseModelConfig } from '../../../trainer/model/config';
import {
  formatBytes,
  formatParameters,
  machineMemory,
  memoryNeeded,
  type LocalModel,
} from '../../../trainer/model/hub/catalog';
import { downloadModel, type DownloadResult } from '../../../trainer/model/hub/download';
import { sha256OfFiles } from '../../../trainer/util/sha256';
import { int8OnlyConfigJson } from '../../fixtures/hub/int8-only-config';
import { startHubServer, type HubServer } from '../../fixtures/hub/hub-server';
import { removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { makeTinyModel, type TinyModel } from '../../fixtures/pipeline/tiny-model';
import { tinyConfigJson } from '../../fixtures/tiny-config';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');

/** The CLI in a child process; async, so this process's HTTP server keeps answering it. */
function idiom(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const sha = (file: string) => sha256OfFiles([file]);
const errorLines = (stderr: string) =>
  stderr
    .trim()
    .split('\n')
    .filter((line) => line.startsWith('idiom:'));

// Downloads from a local server in the Hub's URL layout: what is fetched, resumed, checked and
// refused, and that the result is a model folder Idiom loads.
describe('idiom models download (a local Hub)', function () {
  this.timeout(120_000);
  let base: string;
  let hub: HubServer;
  let model: TinyModel;

  before(async () => {
    base = tempDir('hub-download');
    model = await makeTinyModel(path.join(base, 'source'));
    fs.writeFileSync(path.join(model.dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 256 }));
    fs.writeFileSync(path.join(model.dir, 'generation_config.json'), JSON.stringify({ do_sample: false }));
    // Files serving does not need: never fetched.
    fs.writeFileSync(path.join(model.dir, 'README.md'), '# tiny\n');
    fs.writeFileSync(path.join(model.dir, 'pytorch_model.bin'), Buffer.alloc(1024));
    hub = await startHubServer();
  });
  after(async () => {
    await hub.close();
    removeDir(base);
  });

  const cacheOf = (name: string) => path.join(base, name, 'hub');
  const weightRequests = (id: string) =>
    hub.requests.filter((r) => r.url.startsWith(`/${id}/resolve/`) && r.url.endsWith('.safetensors'));

  it('fetches only the files serving needs into the cache layout, and the folder loads and lists', async () => {
    const { commit } = hub.add('tiny-org/tiny-coder', model.dir);
    const env = { HF_HOME: path.join(base, 'full') };
    const run = await idiom(['models', 'download', 'tiny-org/tiny-coder', '--endpoint', hub.endpoint, '--json'], env);
    assert.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout) as DownloadResult;
    const repo = path.join(cacheOf('full'), 'models--tiny-org--tiny-coder');
    assert.equal(result.path, path.join(repo, 'snapshots', commit));
    assert.deepEqual([...result.files].sort(), [
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    assert.equal(fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8'), commit);
    for (const file of result.files) {
      assert.ok(fs.lstatSync(path.join(result.path, file)).isSymbolicLink(), `${file} links into blobs/`);
      assert.equal(await sha(path.join(result.path, file)), await sha(path.join(model.dir, file)), file);
    }
    assert.match(run.stderr, /model\.safetensors: 100%/);
    assert.ok(!hub.requests.some((r) => /README|pytorch_model/.test(r.url)), 'unneeded files are not fetched');

    // The weights Idiom loads are the source's.
    assert.equal((await loadCheckpoint(result.path)).sha256, (await loadCheckpoint(model.dir)).sha256);
    const list = await idiom(['models', 'list', '--json'], env);
    assert.equal(list.status, 0, list.stderr);
    const listed = (JSON.parse(list.stdout) as { models: LocalModel[] }).models.find((m) => m.source === 'hf-cache');
    assert.ok(listed, list.stdout);
    assert.equal(listed.id, 'tiny-org/tiny-coder');
    assert.deepEqual(listed.refs, ['main']);
    assert.equal(listed.parameters, countParameters(model.config));
    assert.equal(listed.dtype, 'F32');
    assert.equal(listed.memoryBytes, memoryNeeded(countParameters(model.config), model.config, 'float32'));
    assert.equal(listed.fim, 'qwen');
    assert.equal(listed.problem, null);
    assert.equal(listed.fits, true);

    // Run again: everything is cached, no byte of weights is fetched.
    const before = weightRequests('tiny-org/tiny-coder').length;
    const again = await downloadModel('tiny-org/tiny-coder', { endpoint: hub.endpoint, cacheDir: cacheOf('full') });
    assert.equal(again.fetched, 0);
    assert.equal(weightRequests('tiny-org/tiny-coder').length, before);
  });

  it('an interrupted download fails in one line and the next run resumes it with a Range request', async () => {
    hub.add('tiny-org/cut', model.dir);
    hub.cutNext('model.safetensors');
    const env = { HF_HOME: path.join(base, 'cut') };
    const first = await idiom(['models', 'download', 'tiny-org/cut', '--endpoint', hub.endpoint], env);
    assert.equal(first.status, 1);
    const lines = errorLines(first.stderr);
    assert.equal(lines.length, 1, first.stderr);
    assert.match(lines[0], /download of model\.safetensors interrupted at .*run it again to resume/);

    const blobs = path.join(cacheOf('cut'), 'models--tiny-org--cut', 'blobs');
    const partial = fs.readdirSync(blobs).find((file) => file.endsWith('.incomplete'));
    assert.ok(partial, 'the partial file is kept');
    const kept = fs.statSync(path.join(blobs, partial)).size;
    const size = fs.statSync(path.join(model.dir, 'model.safetensors')).size;
    assert.ok(kept > 0 && kept < size, `${kept} of ${size} bytes kept`);

    const second = await downloadModel('tiny-org/cut', { endpoint: hub.endpoint, cacheDir: cacheOf('cut') });
    assert.deepEqual(second.resumed, ['model.safetensors']);
    assert.equal(weightRequests('tiny-org/cut').at(-1)?.range, `bytes=${kept}-`);
    assert.equal(
      await sha(path.join(second.path, 'model.safetensors')),
      await sha(path.join(model.dir, 'model.safetensors')),
    );
    assert.ok(!fs.readdirSync(blobs).some((file) => file.endsWith('.incomplete')));
  });

  it('a file whose sha256 is not the one the Hub lists is discarded, in one line', async () => {
    hub.add('tiny-org/tampered', model.dir);
    hub.listSha256('model.safetensors', '0'.repeat(64));
    try {
      const cacheDir = cacheOf('tampered');
      await assert.rejects(downloadModel('tiny-org/tampered', { endpoint: hub.endpoint, cacheDir }), (error: Error) => {
        assert.match(
          error.message,
          /^model\.safetensors: sha256 [0-9a-f]{64} does not match the Hub's 0{64}; the download is discarded$/,
        );
        return true;
      });
      const repo = path.join(cacheDir, 'models--tiny-org--tampered');
      assert.deepEqual(
        fs.readdirSync(path.join(repo, 'blobs')).filter((file) => file.length === 64 || file.endsWith('.incomplete')),
        [],
      );
      const snapshot = fs.readdirSync(path.join(repo, 'snapshots'))[0];
      assert.ok(!fs.existsSync(path.join(repo, 'snapshots', snapshot, 'model.safetensors')));
    } finally {
      hub.listSha256('model.safetensors', null);
    }
  });

  it('with no endpoint nothing is requested', async () => {
    const requests = hub.requests.length;
    const run = await idiom(['models', 'download', 'tiny-org/tiny-coder', '--endpoint', ''], {
      HF_HOME: path.join(base, 'off'),
    });
    assert.equal(run.status, 1);
    assert.deepEqual(errorLines(run.stderr), [
      'idiom: model downloads are turned off (no Hugging Face Hub endpoint is set)',
    ]);
    assert.equal(hub.requests.length, requests);
    assert.ok(!fs.existsSync(path.join(base, 'off')));
  });

  it('a model larger than memory is refused after config.json, before its weights', async () => {
    const huge = path.join(base, 'huge-source');
    fs.mkdirSync(huge);
    const json = tinyConfigJson({
      hidden_size: 16384,
      num_hidden_layers: 200,
      intermediate_size: 65536,
      vocab_size: 256000,
    });
    const config = parseModelConfig(json);
    const needed = memoryNeeded(countParameters(config), config, 'int8');
    assert.ok(needed > os.totalmem(), 'the test model must exceed this machine even at int8');
    fs.writeFileSync(path.join(huge, 'config.json'), JSON.stringify(json));
    fs.copyFileSync(path.join(model.dir, 'tokenizer.json'), path.join(huge, 'tokenizer.json'));
    fs.copyFileSync(path.join(model.dir, 'model.safetensors'), path.join(huge, 'model.safetensors'));
    hub.add('tiny-org/huge', huge);
    await assert.rejects(
      downloadModel('tiny-org/huge', { endpoint: hub.endpoint, cacheDir: cacheOf('huge'), memory: machineMemory() }),
      new RegExp(
        `^Error: at int8 \\(precision auto, ${formatParameters(countParameters(config)).replace('.', '\\.')} parameters\\) this model needs [\\d.]+ [GT]B of memory to serve; this machine has [\\d.]+ GB; not downloading its weights$`,
      ),
    );
    assert.deepEqual(weightRequests('tiny-org/huge'), []);
  });

  it('the memory check assumes the serving precision: a model that fits only at int8 downloads at auto, not at float32', async () => {
    const json = int8OnlyConfigJson();
    const config = parseModelConfig(json);
    const parameters = countParameters(config);
    assert.ok(memoryNeeded(parameters, config, 'int8') < os.totalmem(), 'it fits at int8');
    assert.ok(memoryNeeded(parameters, config, 'float32') > os.totalmem(), 'it does not fit at float32');
    const half = path.join(base, 'half-source');
    fs.mkdirSync(half);
    fs.writeFileSync(path.join(half, 'config.json'), JSON.stringify(json));
    fs.copyFileSync(path.join(model.dir, 'tokenizer.json'), path.join(half, 'tokenizer.json'));
    fs.copyFileSync(path.join(model.dir, 'model.safetensors'), path.join(half, 'model.safetensors'));
    hub.add('tiny-org/half', half);

    const float32 = await idiom(
      ['models', 'download', 'tiny-org/half', '--endpoint', hub.endpoint, '--precision', 'float32'],
      { HF_HOME: path.join(base, 'half-float32') },
    );
    assert.equal(float32.status, 1);
    assert.deepEqual(errorLines(float32.stderr), [
      `idiom: at float32 this model needs ${formatBytes(memoryNeeded(parameters, config, 'float32'))} of memory to serve; this machine has ${formatBytes(os.totalmem())}; not downloading its weights`,
    ]);
    assert.deepEqual(weightRequests('tiny-org/half'), []);

    const auto = await idiom(['models', 'download', 'tiny-org/half', '--endpoint', hub.endpoint, '--json'], {
      HF_HOME: path.join(base, 'half-auto'),
    });
    assert.equal(auto.status, 0, auto.stderr);
    assert.ok((JSON.parse(auto.stdout) as DownloadResult).files.includes('model.safetensors'));
    assert.equal(weightRequests('tiny-org/half').length, 1);
  });
});
