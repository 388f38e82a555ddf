import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportAdapter } from '../../../trainer/adapters/export/export';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { stopTokenIds } from '../../../trainer/compute/engine/generation-handlers';
import { packageRoot } from '../../../trainer/model/base-model';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import { PROJECTIONS } from '../../../trainer/model/config';
import { Tokenizer } from '../../../trainer/model/tokenizer/tokenizer';
import { startCompletionsServer, type CompletionsServer } from '../../llama/completions-server';
import { llamaRuntimeInstalled } from '../../llama/llama';
import { inlineCompletion, startServer, stopServer, waitFor, waitForModel, type Session } from '../server/session';
import { draftManifest, randomLoraTensors, tempDir } from '../../unit/adapters/helpers';

// Completions from an endpoint that is a real engine: llama.cpp (node-llama-cpp) serving the
// adapter exported as GGUF, behind POST /v1/completions. Through the real language server, the
// ghost text from the endpoint equals the local engine's with the same adapter; then the endpoint
// times out, and goes away, and the local model answers.

const embedded = path.join(packageRoot()!, 'models');
const lines = [
  'export function add(a: number, b: number): number {',
  '  return a + b;',
  '}',
  '',
  'export function scale(values: number[], factor: number): number[] {',
  '  return values.map((value) => value * factor);',
  '}',
  '',
  'export function total(values: number[]): number {',
  '  return values.reduce((sum, value) => sum + value, 0);',
  '}',
];
/** Cursor points partway into lines, where the small model has something to say. */
const points = [
  { line: 4, character: 'export function scale('.length },
  { line: 5, character: '  return values.'.length },
  { line: 8, character: 'export function total('.length },
  { line: 9, character: '  return values.'.length },
];
const completion = { minConfidence: 0, recall: false, prompt: 'prefix' } as const;

describe('endpoint completions from llama.cpp serving the exported adapter', function () {
  this.timeout(300_000);
  let repo: string;
  let engine: CompletionsServer;
  let session: Session;
  let version = 1;

  before(async function () {
    if (!llamaRuntimeInstalled()) {
      console.log('    skipped: node-llama-cpp is not installed (run test/llama/runtime/install.sh)');
      this.skip();
    }
    repo = tempDir('endpoint-llama');
    spawnSync('git', ['init', '-q', repo]);
    const base = await loadCheckpoint(embedded);
    const registry = await Registry.open(repo);
    const staging = registry.stagingPath();
    const tensors = randomLoraTensors(base.config, 4, PROJECTIONS, 11);
    // Small enough to keep the model's output code-like, large enough to change it.
    for (const tensor of tensors.values()) {
      const data = tensor.data as Float32Array;
      for (let i = 0; i < data.length; i++) data[i] *= 0.05;
    }
    await writeAdapter(staging, {
      config: { r: 4, alpha: 8, targets: PROJECTIONS },
      tensors,
      manifest: draftManifest({ base: { name: 'idiom-tiny', sha256: base.sha256 } }),
      baseConfig: base.config,
    });
    const { id } = await registry.add(staging);
    await registry.activate(id, 'complete');
    const exported = await exportAdapter({
      repo,
      which: id,
      mode: 'complete',
      format: 'gguf',
      precision: 'f32',
      out: path.join(repo, 'gguf'),
    });
    const tokenizer = await Tokenizer.load(embedded);
    engine = await startCompletionsServer(
      exported.baseGguf!,
      path.join(exported.out, 'adapter.gguf'),
      stopTokenIds(tokenizer, base.config.eosTokenId),
    );
    session = await startServer(repo, { settings: { completion } });
    const ready = await waitForModel(session);
    assert.equal(ready.state, 'ready', ready.message);
    assert.equal(ready.adapter?.id, id, 'the adapter serves locally');
  });
  after(async () => {
    if (session) await stopServer(session);
    if (engine) await engine.close();
    if (repo) fs.rmSync(repo, { recursive: true, force: true });
  });

  /** Ghost text at each point of a fresh copy of the file, and the time each took. */
  async function ghostTexts(): Promise<{ texts: (string | null)[]; ms: number[] }> {
    const uri = `file://${path.join(repo, 'math.ts')}`;
    const texts: (string | null)[] = [];
    const ms: number[] = [];
    for (const point of points) {
      version++;
      const text = lines.map((line, i) => (i === point.line ? line.slice(0, point.character) : line)).join('\n');
      const method = version === 2 ? 'textDocument/didOpen' : 'textDocument/didChange';
      await session.connection.sendNotification(
        method,
        method === 'textDocument/didOpen'
          ? { textDocument: { uri, languageId: 'typescript', version, text } }
          : { textDocument: { uri, version }, contentChanges: [{ text }] },
      );
      const started = performance.now();
      const answer = await inlineCompletion(session, uri, point.line, point.character);
      ms.push(performance.now() - started);
      texts.push(answer?.items[0]?.insertText ?? null);
    }
    return { texts, ms };
  }

  async function useEndpoint(endpoint: Record<string, unknown>): Promise<void> {
    await session.connection.sendNotification('workspace/didChangeConfiguration', {
      settings: { idiom: { completion, endpoint: { url: '', timeoutMs: 60_000, ...endpoint } } },
    });
  }

  it('shows what the local engine shows, decoded by llama.cpp', async () => {
    const local = await ghostTexts();
    assert.ok(local.texts.filter((text) => text !== null).length >= 2, `local: ${JSON.stringify(local.texts)}`);
    await useEndpoint({ url: engine.url, kind: 'openai-completions' });
    const before = engine.answered;
    const remote = await ghostTexts();
    assert.equal(engine.answered - before, points.length, 'every point went to llama.cpp');
    assert.deepEqual(remote.texts, local.texts);
    assert.equal(session.statuses.at(-1)?.endpoint?.state, 'up');
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    console.log(
      `    latency per completion, median of ${points.length}: local ${median(local.ms).toFixed(0)} ms, ` +
        `llama.cpp endpoint ${median(remote.ms).toFixed(0)} ms`,
    );
  });

  it('a timeout and a stopped engine: the status says down, and the local model answers', async () => {
    await useEndpoint({});
    const local = await ghostTexts();
    await useEndpoint({ url: engine.url, kind: 'openai-completions', timeoutMs: 1 });
    assert.deepEqual((await ghostTexts()).texts, local.texts);
    const slow = await waitFor('down', () => session.statuses.at(-1)?.endpoint ?? undefined);
    assert.equal(slow.state, 'down');
    assert.match(slow.message ?? '', /no answer within 1 ms/);

    await engine.close();
    await useEndpoint({ url: engine.url, kind: 'openai-completions' });
    assert.deepEqual((await ghostTexts()).texts, local.texts);
    const gone = await waitFor('down', () => {
      const endpoint = session.statuses.at(-1)?.endpoint;
      return endpoint?.state === 'down' ? endpoint : undefined;
    });
    assert.match(gone.message ?? '', /ECONNREFUSED/);
  });
});
