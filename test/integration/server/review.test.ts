import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Diagnostic } from 'vscode-languageserver';
import { ReviewRequest, SetModeRequest, type ReviewResult } from '../../../server/protocol';
import { entityModule, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import type { TinyModel } from '../../fixtures/pipeline/tiny-model';
import { trainedIdiomRepo } from '../../fixtures/pipeline/trained-idiom-repo';
import { startServer, stopServer, waitFor, waitForModel, type Session } from './session';

// Review mode over stdio: a tiny model trained here on a repository written in one idiom (as
// test/integration/review/planted.test.ts, same training and the mean aggregate), a new file in
// that idiom with one planted odd line: opening it in review mode publishes an Information
// diagnostic on that line, and its quick fix replaces the line with the adapter's own.

const PLANTED = '  while (Math.random() > 0.5) process.exit(JSON.stringify(globalThis) as never);';

type CodeActionAnswer =
  | {
      title: string;
      kind?: string;
      edit?: { changes?: Record<string, { range: Diagnostic['range']; newText: string }[]> };
    }[]
  | null;

describe('language server: review mode diagnostics and quick fix', function () {
  this.timeout(240_000);
  let base: string;
  let model: TinyModel;
  let repo: IdiomRepo;
  let session: Session | null = null;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-review-'));
    ({ model, repo } = await trainedIdiomRepo(base, {
      budget: { tokens: 100_000 },
      batch: 4,
      maxEpochs: 30,
      heldOut: { maxLines: 8 },
      // Trained hard on purpose (its lines must stand out); the memorisation check has its own test.
      memorisation: false,
    }));
  });
  after(async () => {
    if (session) await stopServer(session);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it("setMode review + didOpen: an Information diagnostic on the planted line; the quick fix is the adapter's line", async () => {
    const lines = entityModule('widget').split('\n');
    const plantedLine = lines.findIndex((l) => l.includes('repo.put(renamed)')) + 1;
    lines[plantedLine - 1] = PLANTED;
    const text = lines.join('\n');
    const file = path.join(repo.root, 'src', 'widget.ts');
    fs.writeFileSync(file, text);
    const uri = pathToFileURL(file).href;

    session = await startServer(repo.root, { settings: { baseModelPath: model.dir, review: { aggregate: 'mean' } } });
    assert.equal((await waitForModel(session)).state, 'ready');
    const published = new Map<string, Diagnostic[]>();
    session.connection.onNotification(
      'textDocument/publishDiagnostics',
      (params: { uri: string; diagnostics: Diagnostic[] }) => {
        published.set(params.uri, params.diagnostics);
      },
    );
    const status = await session.connection.sendRequest(SetModeRequest, { mode: 'review' });
    assert.equal(status.mode, 'review');
    assert.ok(status.adapter, 'review serves the repository adapter (active for complete)');
    await session.connection.sendNotification('textDocument/didOpen', {
      textDocument: { uri, languageId: 'typescript', version: 1, text },
    });

    const diagnostics = await waitFor('review diagnostics', () => published.get(uri), 120_000);
    const planted = diagnostics.find((d) => d.range.start.line === plantedLine - 1);
    assert.ok(
      planted,
      `no diagnostic on line ${plantedLine}: ${JSON.stringify(diagnostics)} ${session.logs.join(' | ')}`,
    );
    assert.equal(planted.severity, 3); // Information
    assert.match(
      planted.message as string,
      /^Unusual for this codebase: \d+\.\d bits\/token under the repository adapter \(top 2% starts at \d+\.\d, base model \d+\.\d\)$/,
    );
    assert.ok(
      diagnostics.length <= 3,
      `few other lines flagged: ${JSON.stringify(diagnostics.map((d) => d.range.start.line + 1))}`,
    );

    // idiom/review answers the same numbers on request.
    const reviewed: ReviewResult = await session.connection.sendRequest(ReviewRequest, { uri });
    assert.ok(reviewed.flagged.includes(plantedLine), JSON.stringify(reviewed));
    assert.equal(reviewed.reviewed, lines.filter((l) => /\S/.test(l)).length);

    const actions = await session.connection.sendRequest<CodeActionAnswer>('textDocument/codeAction', {
      textDocument: { uri },
      range: planted.range,
      context: { diagnostics: [planted] },
    });
    assert.equal(actions?.length, 1, JSON.stringify(actions));
    const action = actions![0];
    assert.match(action.title, /^Show what this codebase would write: /);
    assert.equal(action.kind, 'quickfix');
    const edits = action.edit!.changes![uri];
    assert.equal(edits.length, 1);
    assert.deepEqual(edits[0].range, {
      start: { line: plantedLine - 1, character: 0 },
      end: { line: plantedLine - 1, character: PLANTED.length },
    });
    assert.ok(
      edits[0].newText.trim() !== '' && !edits[0].newText.includes('\n') && edits[0].newText !== PLANTED,
      JSON.stringify(edits[0].newText),
    );

    // Leaving review mode clears them.
    published.delete(uri);
    await session.connection.sendRequest(SetModeRequest, { mode: 'complete' });
    assert.deepEqual(await waitFor('cleared diagnostics', () => published.get(uri)), []);
  });

  it('a committed file saved with one changed line: only that line is reviewed (vs HEAD)', async () => {
    const file = path.join(repo.root, 'src', 'order.ts');
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    const changed = lines.findIndex((l) => l.includes('repo.delete(id)')) + 1;
    lines[changed - 1] = PLANTED;
    const text = lines.join('\n');
    const uri = pathToFileURL(file).href;
    const published = new Map<string, Diagnostic[]>();
    session!.connection.onNotification(
      'textDocument/publishDiagnostics',
      (params: { uri: string; diagnostics: Diagnostic[] }) => {
        published.set(params.uri, params.diagnostics);
      },
    );
    await session!.connection.sendRequest(SetModeRequest, { mode: 'review' });
    // The buffer differs from HEAD (and from the file on disk): the editor's text is what is reviewed.
    await session!.connection.sendNotification('textDocument/didOpen', {
      textDocument: { uri, languageId: 'typescript', version: 1, text },
    });
    await session!.connection.sendNotification('textDocument/didSave', { textDocument: { uri } });
    const diagnostics = await waitFor('review diagnostics', () => published.get(uri), 120_000);
    assert.deepEqual(
      diagnostics.map((d) => d.range.start.line + 1),
      [changed],
    );
    const reviewed: ReviewResult = await session!.connection.sendRequest(ReviewRequest, { uri });
    assert.equal(reviewed.reviewed, 1);
    const all: ReviewResult = await session!.connection.sendRequest(ReviewRequest, { uri, all: true });
    assert.equal(all.reviewed, lines.filter((l) => /\S/.test(l)).length);
    assert.equal(all.threshold, reviewed.threshold);
  });
});
