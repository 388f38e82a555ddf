import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StatusRequest } from '../../../server/protocol';
import { trainByteLevelBpe } from '../../../trainer/model/tokenizer/bpe-trainer';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
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

// A base model folder that cannot serve completions (its config disagrees with its weights, its
// tokenizer has no FIM tokens, it is an instruct checkpoint) costs one log line; the model that
// served before keeps serving. In review mode a checkpoint without FIM tokens still loads.

describe('language server: a base model that cannot complete code', function () {
  this.timeout(90_000);
  let dir: string;
  let good: string;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  /** A copy of the good model under `name`, with `change` applied to it. */
  function variant(name: string, change: (at: string) => void): string {
    const at = path.join(dir, name);
    fs.cpSync(good, at, { recursive: true });
    change(at);
    return at;
  }

  const noFimTokenizer = (at: string) =>
    fs.writeFileSync(
      path.join(at, 'tokenizer.json'),
      JSON.stringify(
        trainByteLevelBpe(['export function add(a, b) { return a + b; }'], {
          vocabSize: 300,
          specialTokens: ['<|endoftext|>'],
        }),
      ),
    );

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-bad-model-'));
    good = path.join(dir, 'good');
    await makePrintableModel(good, { modelType: 'qwen2', seed: 7 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function switchTo(session: Session, modelDir: string, mode = 'complete'): Promise<void> {
    await session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { baseModelPath: modelDir, mode } },
    });
  }

  it('keeps serving the previous model, with one line, for a config that disagrees with the weights or a tokenizer without FIM tokens', async () => {
    const wrongShapes = variant('wrong-shapes', (at) => {
      const config = JSON.parse(fs.readFileSync(path.join(at, 'config.json'), 'utf8'));
      config.intermediate_size += 8;
      fs.writeFileSync(path.join(at, 'config.json'), JSON.stringify(config));
    });
    const noFim = variant('no-fim', noFimTokenizer);
    const instruct = variant('Coder-1.5B-Instruct', () => undefined);
    const session = await startServer(dir, { settings: { baseModelPath: good } });
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const expected = await engineCompletion(good, null, { text, offset });
      assert.ok(expected, 'the good model completes something here (else the check proves little)');
      const cases: Array<[string, RegExp]> = [
        [
          wrongShapes,
          /config\.json disagrees with model\.safetensors: tensor "model\.layers\.0\.mlp\.gate_proj\.weight" is \[128, 64\], the config \(.*intermediate_size 136.*\) implies \[136, 64\]/,
        ],
        [
          noFim,
          /no-fim\/tokenizer\.json has no fill-in-the-middle tokens: inline completion needs a base \(FIM\) model/,
        ],
        [instruct, /Coder-1\.5B-Instruct is a chat\/instruct checkpoint/],
      ];
      for (const [folder, pattern] of cases) {
        const before = session.logs.length;
        await switchTo(session, folder);
        const line = await waitFor(`the log line for ${path.basename(folder)}`, () =>
          session.logs.slice(before).find((entry) => pattern.test(entry)),
        );
        assert.match(line, /^not loading the base model: /);
        assert.ok(!line.includes('\n'), line);
        const status = await session.connection.sendRequest(StatusRequest, {});
        assert.equal(status.state, 'ready');
        assert.equal(status.model?.path, good, 'the good model still serves');
        assert.match(status.message, /still serving good/);
        const answer = await inlineCompletion(session, uri, 1, 9);
        assert.deepEqual(
          answer?.items.map((item) => item.insertText),
          [expected],
        );
      }
    } finally {
      await stopServer(session);
    }
  });

  it('review mode loads a checkpoint without FIM tokens; inline completion says why it is off and answers nothing', async () => {
    const noFim = variant('no-fim-review', noFimTokenizer);
    const session = await startServer(dir, { settings: { baseModelPath: good } });
    try {
      await waitForModel(session);
      const before = session.logs.length;
      await switchTo(session, noFim, 'review');
      await waitFor('the review model', () =>
        session.statuses.find((s, i) => i > 0 && s.state === 'ready' && s.model?.path === noFim),
      );
      const line = await waitFor('the completion problem', () =>
        session.logs.slice(before).find((entry) => entry.startsWith('no inline completion: ')),
      );
      assert.match(line, /has no fill-in-the-middle tokens: .*review mode can still use this one/);
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      assert.equal(await inlineCompletion(session, uri, 1, 9), null);
    } finally {
      await stopServer(session);
    }
  });

  it('a folder that passes the checks but fails to load puts the previous model back, with one line', async () => {
    // Review mode does not read the tokenizer before loading, so a corrupt one fails in the load.
    const corrupt = variant('corrupt-tokenizer', (at) =>
      fs.writeFileSync(path.join(at, 'tokenizer.json'), '{"model": '),
    );
    const session = await startServer(dir, { settings: { baseModelPath: good } });
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const expected = await engineCompletion(good, null, { text, offset });
      assert.ok(expected, 'the good model completes something here (else the check proves little)');
      const before = session.logs.length;
      await switchTo(session, corrupt, 'review');
      const line = await waitFor('the load failure', () =>
        session.logs.slice(before).find((entry) => entry.startsWith('cannot load the base model: ')),
      );
      assert.ok(!line.includes('\n'), line);
      const status = await waitFor('the previous model serving again', () =>
        session.statuses.find((s) => s.state === 'ready' && /still serving good/.test(s.message)),
      );
      assert.equal(status.model?.path, good);
      assert.ok(!session.statuses.some((s) => s.state === 'error'), 'never without a model');
      const answer = await inlineCompletion(session, uri, 1, 9);
      assert.deepEqual(
        answer?.items.map((item) => item.insertText),
        [expected],
      );
    } finally {
      await stopServer(session);
    }
  });
});
