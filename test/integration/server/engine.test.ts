import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { StatusNotification, StatusRequest, type StatusResult } from '../../../server/protocol';
import { parseModelConfig } from '../../../trainer/model/config';
import { randomCheckpointWeights, saveCheckpoint } from '../../../trainer/model/checkpoint';
import { trainByteLevelBpe } from '../../../trainer/tokenizer/bpe-trainer';
import { Tokenizer } from '../../../trainer/tokenizer/tokenizer';
import { engineCompletion } from './reference';

const bin = path.join(__dirname, '..', '..', '..', 'trainer', 'cli', 'bin.js');
const corpus = ['export function add(a: number, b: number) {\n  return a + b;\n}\n', 'const total = items.reduce((sum, item) => sum + item.price, 0);\n'];

describe('language server with the real engine (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-engine-'));
    const tokenizerJson = trainByteLevelBpe(corpus, { vocabSize: 300 });
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
    const vocab = (await Tokenizer.load(dir)).vocabSize;
    const cfg = parseModelConfig({
      model_type: 'qwen2', hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
      intermediate_size: 96, vocab_size: vocab, rms_norm_eps: 1e-6, max_position_embeddings: 512, tie_word_embeddings: true,
    });
    await saveCheckpoint(dir, cfg, randomCheckpointWeights(cfg, 7, { std: 0.2 }));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('loads the model in the engine worker and answers inlineCompletion with what the engine decodes', async () => {
    const child = spawn(process.execPath, [bin, 'lsp', '--stdio'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    const connection = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    const statuses: StatusResult[] = [];
    connection.onNotification(StatusNotification, (status) => {
      statuses.push(status);
    });
    connection.listen();
    try {
      await connection.sendRequest('initialize', { processId: process.pid, rootUri: null, capabilities: {}, initializationOptions: { settings: { baseModelPath: dir } } });
      await connection.sendNotification('initialized', {});
      const start = Date.now();
      while (!statuses.some((s) => s.state === 'ready' || s.state === 'error' || s.state === 'no-model') && Date.now() - start < 30_000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const status = await connection.sendRequest(StatusRequest, {});
      assert.equal(status.state, 'ready', status.message);
      assert.equal(status.model?.path, dir);

      const text = 'export function add(a: number, b: number) {\n  return \n}\n';
      const offset = text.indexOf('return ') + 'return '.length;
      const uri = pathToFileURL(path.join(dir, 'add.ts')).href;
      await connection.sendNotification('textDocument/didOpen', { textDocument: { uri, languageId: 'typescript', version: 1, text } });
      const result = await connection.sendRequest<{ items: { insertText: string }[] } | null>('textDocument/inlineCompletion', {
        textDocument: { uri },
        position: { line: 1, character: 9 },
        context: { triggerKind: 1 },
      });

      // The same prompt, decoded by the engine in this process, post-processed the same way.
      const expected = await engineCompletion(dir, null, { text, offset });
      assert.ok(expected, 'this checkpoint decodes something at the cursor (else the check proves little)');
      assert.deepEqual(result?.items.map((item) => item.insertText), [expected]);
    } finally {
      await connection.sendRequest('shutdown').catch(() => undefined);
      await connection.sendNotification('exit').catch(() => undefined);
      await new Promise((resolve) => child.once('exit', resolve));
      connection.dispose();
    }
  });
});
