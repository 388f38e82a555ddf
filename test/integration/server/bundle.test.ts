import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StatusRequest, TrainRequest } from '../../../server/protocol';
import { buildIdiomRepo, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makePrintableModel, type PrintableModel } from '../../fixtures/e2e-model/printable-model';
import { engineCompletion } from './reference';
import { inlineCompletion, openDocument, startServer, stopServer, waitForModel } from './session';

// The esbuild bundle as the .vsix ships it (dist/ alone, no node_modules above it): it completes,
// and it trains, mining with tree-sitter from the .wasm files shipped in dist/ and writing a
// report with charts.

const packageRoot = path.join(__dirname, '..', '..', '..');

describe('the bundled server (dist/ as the .vsix ships it)', function () {
  this.timeout(180_000);
  let base: string;
  let model: PrintableModel;
  let repo: IdiomRepo;
  let serverJs: string;

  before(async () => {
    for (const script of ['build', 'package:onnxruntime']) {
      const built = spawnSync('npm', ['run', '-s', script], { cwd: packageRoot, encoding: 'utf8' });
      assert.equal(built.status, 0, built.stderr);
    }
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-bundle-'));
    // Far from the checkout's node_modules: what resolves must come from dist/ itself.
    fs.cpSync(path.join(packageRoot, 'dist'), path.join(base, 'extension', 'dist'), {
      recursive: true,
      filter: (source) => !source.endsWith('.map'),
    });
    serverJs = path.join(base, 'extension', 'dist', 'server.js');
    model = await makePrintableModel(path.join(base, 'model'));
    repo = buildIdiomRepo(base);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('answers completions and trains an adapter that then serves', async () => {
    const session = await startServer(repo.root, { settings: { baseModelPath: model.dir } }, {}, [serverJs]);
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', `${ready.message}\n${session.stderr.join('')}`);
      const text = 'export function findUserById(repo: Repository<User>, id: string): User {\n  return \n}\n';
      const offset = text.indexOf('return ') + 'return '.length;
      const uri = openDocument(session, path.join(repo.root, 'src', 'lookup.ts'), text);
      const answer = await inlineCompletion(session, uri, 1, 9);
      assert.equal(answer?.items[0]?.insertText ?? null, await engineCompletion(model.dir, null, { text, offset }));

      const result = await session.connection.sendRequest(TrainRequest, { tokens: 6_000, threads: 1, force: true });
      assert.equal(result.activated, true, session.logs.join('\n'));
      assert.ok(result.tokens > 0);
      // The report draws its charts with chart.js, shipped beside the bundle.
      assert.match(fs.readFileSync(result.report!, 'utf8'), /new Chart\(/);
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).adapter?.id, result.adapter.id);
      assert.ok(
        session.logs.some((line) => /trained .*: /.test(line)),
        session.logs.join('\n'),
      );
      assert.ok(!session.logs.some((line) => /tree-sitter|grammar/.test(line)), session.logs.join('\n'));
    } finally {
      await stopServer(session);
    }
  });
});
