import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { engineCompletion } from './reference';
import { inlineCompletion, openDocument, type Session, startServer, stopServer, waitForModel } from './session';

// Typing on one line after a fill-in-the-middle request: the server appends the typed text to that
// request's prompt (after its middle marker) instead of laying the prompt out again, so the
// suggestion is the engine's decode of that continued prompt.

const text = 'export function add(a: number, b: number) {\n  return \n}\n';
const offset = text.indexOf('return ') + 'return '.length;
const cursor = { line: 1, character: 9 };

describe('language server: typing continues the fill-in-the-middle prompt (random-weights checkpoint)', function () {
  this.timeout(60_000);
  let dir: string;
  let modelDir: string;
  let session: Session;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-typing-'));
    modelDir = (await makePrintableModel(path.join(dir, 'model'))).dir;
    session = await startServer(dir, {
      settings: { baseModelPath: modelDir, completion: { minConfidence: 0, recall: false, prompt: 'fim' } },
    });
    const ready = await waitForModel(session);
    assert.equal(ready.state, 'ready', ready.message);
  });
  after(async () => {
    await stopServer(session);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a keystroke that departs from the suggestion is answered from the continued prompt', async () => {
    const uri = openDocument(session, path.join(dir, 'add.ts'), text);
    const shown = (await inlineCompletion(session, uri, cursor.line, cursor.character))?.items[0]?.insertText ?? null;
    assert.equal(shown, await engineCompletion(modelDir, null, { text, offset }));
    const first = shown ?? '';
    // A character the suggestion does not start with, so in-flight reuse cannot answer.
    const typed = ['a', 'b'].find((c) => !first.startsWith(c))!;
    const typedText = text.slice(0, offset) + typed + text.slice(offset);
    const continued = await engineCompletion(modelDir, null, { text, offset }, { typed });
    const fresh = await engineCompletion(modelDir, null, { text: typedText, offset: offset + 1 });
    assert.notEqual(continued, fresh, 'the two prompts decode differently here (else the check proves nothing)');

    await session.connection.sendNotification('textDocument/didChange', {
      textDocument: { uri, version: 2 },
      contentChanges: [{ text: typedText }],
    });
    const answer = await inlineCompletion(session, uri, cursor.line, cursor.character + 1);
    assert.equal(answer?.items[0]?.insertText ?? null, continued);

    // A new line starts a fresh prompt.
    const nextLine = `${text.slice(0, offset)}${typed}\n  ${text.slice(offset)}`;
    await session.connection.sendNotification('textDocument/didChange', {
      textDocument: { uri, version: 3 },
      contentChanges: [{ text: nextLine }],
    });
    const below = await inlineCompletion(session, uri, cursor.line + 1, 2);
    const expected = await engineCompletion(modelDir, null, { text: nextLine, offset: offset + 4 });
    assert.equal(below?.items[0]?.insertText ?? null, expected);
  });
});
