import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CancelTrainingRequest, StatusRequest } from '../../../server/protocol';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { bin, inlineCompletion, openDocument, startServer, stopServer, waitForModel, type Session } from './session';

// A careless or hostile client: broken framing, params of the wrong shape, positions outside the
// document, a 20 MB one-line document. The server answers InvalidParams (-32602) or drops the
// notification with one log line, and keeps serving; broken framing closes the connection and
// the process exits instead of hanging.

type RangeItem = {
  insertText: string;
  range?: { start: { line: number; character: number }; end: { line: number; character: number } };
};
type Answer = { items: RangeItem[] } | null;

/** Writes raw bytes to a fresh server; resolves with its exit status and stderr, or null if it is still running after `ms`. */
function rawSession(bytes: string, ms: number): Promise<{ code: number | null; stderr: string } | null> {
  const child = spawn(process.execPath, [bin, 'lsp', '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += String(chunk)));
  child.stdout.resume();
  child.stdin.on('error', () => undefined);
  child.stdin.write(bytes);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(null);
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

async function errorOf(promise: Promise<unknown>): Promise<{ code: number; message: string } | null> {
  try {
    await promise;
    return null;
  } catch (error) {
    return error as { code: number; message: string };
  }
}

describe('language server: malformed and hostile input', function () {
  this.timeout(180_000);
  let dir: string;
  let modelDir: string;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-hostile-'));
    modelDir = path.join(dir, 'model');
    await makePrintableModel(modelDir, { modelType: 'qwen2', seed: 7 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('framing', () => {
    it('a message without Content-Length closes the connection and the server exits, with one line', async () => {
      const body = JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { processId: null, rootUri: null, capabilities: {} },
      });
      const ended = await rawSession(`Content-Type: application/json\r\n\r\n${body}`, 20_000);
      assert.ok(ended, 'the server was still running 20 s later');
      assert.notEqual(ended.code, 0);
      assert.match(ended.stderr, /Content-Length/);
      assert.equal(ended.stderr.trim().split('\n').length, 1, ended.stderr);
    });

    it('a Content-Length of 1e12 closes the connection and the server exits', async () => {
      const ended = await rawSession('Content-Length: 1000000000000\r\n\r\n{"jsonrpc":"2.0"', 20_000);
      assert.ok(ended, 'the server was still running 20 s later');
      assert.notEqual(ended.code, 0);
      assert.match(ended.stderr, /Content-Length/);
    });
  });

  describe('params', () => {
    let session: Session;
    let uri: string;
    let expected: string[];

    before(async () => {
      session = await startServer(dir, { settings: { baseModelPath: modelDir } });
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      uri = openDocument(session, path.join(dir, 'add.ts'), text);
      const answer = (await inlineCompletion(session, uri, 1, 9)) as Answer;
      assert.ok(answer && answer.items.length === 1, 'this model completes something at the cursor');
      expected = answer.items.map((item) => item.insertText);
    });
    after(() => stopServer(session));

    it('drops a didOpen whose uri is not a string; completions elsewhere go on', async () => {
      await session.connection.sendNotification('textDocument/didOpen', {
        textDocument: { uri: 42, languageId: 'typescript', version: 1, text },
      });
      await session.connection.sendNotification('textDocument/didOpen', {
        textDocument: { uri: pathToFileURL(path.join(dir, 'b.ts')).href, languageId: 7, version: 'x', text: null },
      });
      const answer = (await inlineCompletion(session, uri, 1, 9)) as Answer;
      assert.deepEqual(
        answer?.items.map((item) => item.insertText),
        expected,
      );
      const other = openDocument(session, path.join(dir, 'other.ts'), text);
      const second = (await inlineCompletion(session, other, 1, 9)) as Answer;
      assert.deepEqual(
        second?.items.map((item) => item.insertText),
        expected,
      );
      assert.ok(
        session.logs.some((line) => /textDocument\/didOpen/.test(line) && /uri/.test(line)),
        session.logs.join('\n'),
      );
    });

    it('answers idiom/train with InvalidParams when its params are not an object, and starts nothing', async () => {
      for (const params of [42, 'x', [1, 2], { minutes: 'ten' }, { root: 7 }]) {
        const error = await errorOf(session.connection.sendRequest('idiom/train', params));
        assert.equal(error?.code, -32602, `${JSON.stringify(params)}: ${JSON.stringify(error)}`);
      }
      assert.deepEqual(await session.connection.sendRequest(CancelTrainingRequest, {}), { cancelled: false });
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).training, null);
    });

    it('answers a request without a position, or with a negative one, with InvalidParams naming it', async () => {
      const missing = await errorOf(
        session.connection.sendRequest('textDocument/inlineCompletion', {
          textDocument: { uri },
          context: { triggerKind: 1 },
        }),
      );
      assert.equal(missing?.code, -32602);
      assert.match(missing!.message, /position/);
      assert.doesNotMatch(missing!.message, /TypeError|Cannot read/);
      const negative = await errorOf(
        session.connection.sendRequest('textDocument/inlineCompletion', {
          textDocument: { uri },
          position: { line: -1, character: 0 },
          context: { triggerKind: 1 },
        }),
      );
      assert.equal(negative?.code, -32602);
      for (const [method, params] of [
        ['idiom/setMode', { mode: 7 }],
        ['idiom/activate', { id: 7 }],
        ['idiom/adapters', { root: 7 }],
        ['idiom/rollback', { mode: 'nope' }],
        ['idiom/review', 'x'],
        ['textDocument/codeAction', { textDocument: { uri }, range: null, context: {} }],
      ] as const) {
        const error = await errorOf(session.connection.sendRequest(method, params));
        assert.equal(error?.code, -32602, `${method} ${JSON.stringify(params)}: ${JSON.stringify(error)}`);
      }
    });

    it('clamps a position beyond the document: result ranges never point outside it', async () => {
      const lines = text.split('\n');
      const end = { line: lines.length - 1, character: lines[lines.length - 1].length };
      for (const position of [
        { line: 1000, character: 3 },
        { line: 1, character: 1000 },
      ]) {
        const answer = (await session.connection.sendRequest('textDocument/inlineCompletion', {
          textDocument: { uri },
          position,
          context: { triggerKind: 1 },
        })) as Answer;
        for (const item of answer?.items ?? []) {
          assert.ok(item.range, 'items carry a range');
          for (const at of [item.range.start, item.range.end]) {
            assert.ok(
              at.line < lines.length && at.character <= lines[at.line].length,
              `${JSON.stringify(position)} -> ${JSON.stringify(item.range)}`,
            );
          }
        }
        if (position.line === 1000) for (const item of answer?.items ?? []) assert.deepEqual(item.range!.start, end);
      }
    });
  });

  it('a 20 MB one-line document costs a completion about what a small one does, in time and memory', async () => {
    const session = await startServer(dir, {
      settings: { baseModelPath: modelDir, completion: { minConfidence: 0, recall: true, prompt: 'fim' } },
    });
    try {
      await waitForModel(session);
      const small = openDocument(
        session,
        path.join(dir, 'small.js'),
        'var a=function(b){return b*2};'.repeat(20),
        'javascript',
      );
      const line = 'var a=function(b){return b*2};'.repeat(Math.ceil(20_000_000 / 30));
      const huge = openDocument(session, path.join(dir, 'huge.min.js'), line, 'javascript');
      const time = async (target: string, character: number) => {
        const started = performance.now();
        await session.connection.sendRequest('textDocument/inlineCompletion', {
          textDocument: { uri: target },
          position: { line: 0, character },
          context: { triggerKind: 1 },
        });
        return performance.now() - started;
      };
      await time(small, 300); // warm: the document is parsed, the worker has decoded once
      await time(huge, line.length);
      const rssBefore = rssMb(session.child.pid!);
      const smallMs: number[] = [];
      const hugeMs: number[] = [];
      // Different cursors each time: no cache, no reuse.
      for (let i = 1; i <= 4; i++) {
        smallMs.push(await time(small, 300 - i * 30));
        hugeMs.push(await time(huge, line.length - i * 30));
        hugeMs.push(await time(huge, Math.floor(line.length / 2) + i * 30));
      }
      const rssAfter = rssMb(session.child.pid!);
      const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];
      // The huge document's requests do the same work as the small one's: the window around the cursor.
      assert.ok(
        median(hugeMs) < median(smallMs) + 250,
        `huge ${hugeMs.map(Math.round).join('/')} ms vs small ${smallMs.map(Math.round).join('/')} ms`,
      );
      assert.ok(
        rssAfter - rssBefore < 200,
        `RSS grew ${Math.round(rssAfter - rssBefore)} MB over 12 completions (${Math.round(rssBefore)} -> ${Math.round(rssAfter)} MB)`,
      );
    } finally {
      await stopServer(session);
    }
  });
});
