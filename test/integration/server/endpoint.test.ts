import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SetEndpointKeyNotification, type EndpointSettings } from '../../../server/protocol';
import { CancellationTokenSource } from 'vscode-jsonrpc/node';
import {
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  waitFor,
  waitForModel,
  type Session,
} from './session';

// The completion endpoint over the real server, against an HTTP server in this process that
// answers as a broken or slow model server would (500s, garbage, silence), and that records what
// it was asked. The answer of a real engine (llama.cpp) is checked in test/integration/export.

const text = 'const total = sum(lines);\nconst count = \n';
const cursor = { line: 1, character: 'const count = '.length };
/** The model's answer shows as is: no gate, no recall, so both paths decode the same way. */
const completion = { minConfidence: 0, recall: false, prompt: 'prefix' } as const;

interface Recorded {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  closedEarly: boolean;
}

/** Answers by the first path segment: /ok, /500, /garbage, /silent. */
function modelServer(answer: () => unknown): Promise<{ url: string; requests: Recorded[]; close(): Promise<void> }> {
  const requests: Recorded[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const recorded: Recorded = {
        path: request.url ?? '',
        headers: request.headers,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
        closedEarly: false,
      };
      requests.push(recorded);
      response.on('close', () => {
        if (!response.writableEnded) recorded.closedEarly = true;
      });
      const behaviour = recorded.path.split('/')[1];
      if (behaviour === '500') response.writeHead(500).end('model crashed');
      else if (behaviour === 'garbage') response.writeHead(200).end('<html>proxy error</html>');
      else if (behaviour === 'ok') response.writeHead(200).end(JSON.stringify(answer()));
      // 'silent': never answers.
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        requests,
        close: () => {
          server.closeAllConnections();
          return new Promise((done) => server.close(() => done()));
        },
      });
    }),
  );
}

/** A local URL where nothing listens (a port just released). */
function closedPort(): Promise<string> {
  const server = http.createServer();
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(`http://127.0.0.1:${port}`));
    }),
  );
}

describe('language server: completions from an endpoint', function () {
  this.timeout(90_000);
  let dir: string;
  let session: Session;
  let uri: string;
  let answer: unknown;
  let remote: Awaited<ReturnType<typeof modelServer>>;

  async function useEndpoint(endpoint: Partial<EndpointSettings>): Promise<void> {
    await session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { completion, endpoint: { url: '', timeoutMs: 4000, ...endpoint } } },
    });
  }

  let version = 1;
  /** The ghost text at the cursor of a fresh copy of the text (the completion cache never answers). */
  async function ghostText(): Promise<string | null> {
    version++;
    await session.connection.sendNotification('textDocument/didChange', {
      textDocument: { uri, version },
      contentChanges: [{ text: `// ${version}\n${text}` }],
    });
    const result = await inlineCompletion(session, uri, cursor.line + 1, cursor.character);
    return result?.items[0]?.insertText ?? null;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-endpoint-'));
    remote = await modelServer(() => answer);
    session = await startServer(dir, { settings: { completion } });
    const ready = await waitForModel(session);
    assert.equal(ready.state, 'ready', ready.message);
    uri = openDocument(session, path.join(dir, 'totals.ts'), text);
  });
  after(async () => {
    await stopServer(session);
    await remote.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sends the prompt with the key from secret storage and shows the answer through the same filters', async () => {
    const local = await ghostText();
    await useEndpoint({ url: `${remote.url}/ok`, kind: 'openai-completions' });
    const key = `key-${randomBytes(6).toString('hex')}`;
    await session.connection.sendNotification(SetEndpointKeyNotification, { key });

    answer = { choices: [{ text: 'lines.length;\nconst rest = 1;', logprobs: null }] };
    assert.equal(await ghostText(), 'lines.length;', 'post-processed: one line here');
    const asked = remote.requests.at(-1)!;
    assert.equal(asked.path, '/ok/v1/completions');
    assert.equal(asked.headers.authorization, `Bearer ${key}`);
    assert.equal(asked.body.model, 'idiom', 'no adapter serves: the default name');
    assert.ok(String(asked.body.prompt).endsWith('const count = '), `prompt: ${JSON.stringify(asked.body.prompt)}`);
    assert.equal(asked.body.temperature, 0);
    assert.notEqual(local, 'lines.length;', 'the answer is the endpoint’s, not the local model’s');

    // A credential from the endpoint is withheld like one from the local model.
    const planted = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
    answer = { choices: [{ text: `'${planted}';` }] };
    assert.equal(await ghostText(), null);
    assert.ok(session.logs.some((line) => /looked like a credential \(aws-access-key-id\) was withheld/.test(line)));
    assert.ok(!session.logs.some((line) => line.includes(planted)), 'the key is not logged');

    // The confidence gate reads the endpoint's log probabilities.
    await session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { completion: { ...completion, minConfidence: 0.5 } } },
    });
    answer = { choices: [{ text: 'guess;', logprobs: { tokens: ['guess', ';'], token_logprobs: [-2, -0.1] } }] };
    assert.equal(await ghostText(), null, 'probability e^-2.1 is below 0.5');
    answer = { choices: [{ text: 'sure;', logprobs: { tokens: ['sure', ';'], token_logprobs: [-0.1, -0.1] } }] };
    assert.equal(await ghostText(), 'sure;');

    await useEndpoint({ url: `${remote.url}/ok`, kind: 'llama-infill' });
    answer = { content: 'lines.length;' };
    assert.equal(await ghostText(), 'lines.length;');
    const infill = remote.requests.at(-1)!;
    assert.equal(infill.path, '/ok/infill');
    assert.ok(String(infill.body.input_prefix).endsWith('const count = '));
    assert.equal(typeof infill.body.input_suffix, 'string');
    assert.equal(session.statuses.at(-1)?.endpoint?.state, 'up');
  });

  for (const [name, endpoint, reason] of [
    ['a 500', { url: '/500' }, /HTTP 500/],
    ['garbage', { url: '/garbage' }, /not JSON/],
    ['no answer in time', { url: '/silent', timeoutMs: 300 }, /no answer within 300 ms/],
    ['nothing listening', { url: 'closed' }, /ECONNREFUSED/],
  ] as const) {
    it(`${name}: the status says the endpoint is down and the local model answers`, async () => {
      await useEndpoint({});
      const local = await ghostText();
      const url = endpoint.url === 'closed' ? await closedPort() : `${remote.url}${endpoint.url}`;
      await useEndpoint({ ...endpoint, url, kind: 'openai-completions' });
      assert.equal(await ghostText(), local, 'the local model answers this very request');
      const down = await waitFor('the down status', () => {
        const last = session.statuses.at(-1);
        return last?.endpoint?.state === 'down' ? last.endpoint : undefined;
      });
      assert.match(down.message ?? '', reason);
      assert.equal(down.url, url);
      // Down: the next keystrokes do not wait for it again.
      const before = remote.requests.length;
      const started = Date.now();
      assert.equal(await ghostText(), local);
      assert.equal(remote.requests.length, before, 'a down endpoint is left alone for a while');
      assert.ok(Date.now() - started < 3000);
    });
  }

  it('cancelling the completion aborts the HTTP request, and is not a failure', async () => {
    await useEndpoint({ url: `${remote.url}/silent`, kind: 'openai-completions', timeoutMs: 30_000 });
    const before = remote.requests.length;
    const statuses = session.statuses.length;
    const source = new CancellationTokenSource();
    const pending = session.connection
      .sendRequest(
        'textDocument/inlineCompletion',
        {
          textDocument: { uri },
          position: { line: cursor.line, character: cursor.character },
          context: { triggerKind: 2 },
        },
        source.token,
      )
      .catch(() => null);
    const request = await waitFor('the request', () => remote.requests[before]);
    source.cancel();
    await pending;
    await waitFor('the aborted request', () => (request.closedEarly ? true : undefined), 5_000);
    assert.ok(
      !session.statuses.slice(statuses).some((status) => status.endpoint?.state === 'down'),
      'a cancel does not mark the endpoint down',
    );
  });
});
