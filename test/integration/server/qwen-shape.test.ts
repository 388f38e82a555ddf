import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StatusRequest } from '../../../server/protocol';
import { parseModelConfig } from '../../../trainer/model/config';
import { qwenTokenizerFiles, writeRandomCheckpoint } from '../../../trainer/tools/bench/random-checkpoint';
import { engineCompletion } from './reference';
import {
  engineEquivalentCompletion,
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  waitFor,
  waitForModel,
} from './session';

// A random-weight checkpoint at Qwen2.5-Coder-0.5B's shapes (hidden 896, 14 heads, 2 KV heads,
// intermediate 4864, vocabulary 151936, tied) with Qwen's own tokenizer, written as the Hub ships
// it (BF16 safetensors) and served from idiom.baseModelPath. Two layers instead of 24 keep it
// fast on two cores; the embedding (136M parameters) alone puts it above auto's int8 threshold.

const SHAPES = path.join(__dirname, '..', '..', 'fixtures', 'model-shapes', 'qwen2.5-coder-0.5b.json');

describe('a Qwen2.5-Coder-0.5B-shaped checkpoint over LSP', function () {
  this.timeout(180_000);
  let dir: string;
  let modelDir: string;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-qwen-shape-'));
    modelDir = path.join(dir, 'Qwen2.5-Coder-0.5B');
    const cfg = parseModelConfig({ ...JSON.parse(fs.readFileSync(SHAPES, 'utf8')), num_hidden_layers: 2 });
    writeRandomCheckpoint(modelDir, cfg, { seed: 3, tokenizerFiles: qwenTokenizerFiles() });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves it at int8 (auto) and completes a line as the engine does at int8; float32 reloads it', async () => {
    const session = await startServer(dir, {
      settings: { baseModelPath: modelDir, completion: engineEquivalentCompletion },
    });
    try {
      const ready = await waitForModel(session, 120_000);
      assert.equal(ready.state, 'ready', ready.message);
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.model?.path, modelDir);
      assert.equal(status.model?.precision, 'int8');

      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const result = await inlineCompletion(session, uri, 1, 9);
      const expected = await engineCompletion(modelDir, null, { text, offset }, { precision: 'int8' });
      assert.ok(expected, 'this checkpoint decodes something at the cursor (else the check proves little)');
      assert.deepEqual(
        result?.items.map((item) => item.insertText),
        [expected],
      );

      await session.connection.sendNotification('workspace/didChangeConfiguration', {
        settings: { idiom: { precision: 'float32' } },
      });
      const reloaded = await waitFor(
        'the model reloaded at float32',
        () => session.statuses.find((s) => s.state === 'ready' && s.model?.precision === 'float32'),
        120_000,
      );
      assert.equal(reloaded.model?.path, modelDir);
    } finally {
      await stopServer(session);
    }
  });
});
