import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { STATS_FILE } from '../../../trainer/adapters/stats';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import {
  AdaptersReportRequest,
  AdaptersRequest,
  StatusRequest,
  SuggestionAcceptedNotification,
  SuggestionEventNotification,
  type Acceptance,
} from '../../../server/protocol';
import { draftManifest, randomLoraTensors } from '../../unit/adapters/helpers';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { bin, openDocument, startServer, stopServer, waitFor, waitForModel, type Session } from './session';

// Acceptance per adapter over stdio: the server tags every suggestion with an id, the client's
// shown / partial / accepted / dismissed events for it are counted for the adapter that served it
// in .idiom/stats.jsonl, and `idiom adapters --json` shows the counts, also after damage.

type Item = { insertText: string; command?: { command: string; arguments?: unknown[] } };

describe('language server: acceptance counted per adapter version', function () {
  this.timeout(90_000);
  let dir: string;
  let repo: string;
  let modelDir: string;
  let adapterId: string;
  let session: Session | null = null;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const statsFile = () => path.join(repo, '.idiom', STATS_FILE);
  const statsLines = () =>
    fs.existsSync(statsFile()) ? fs.readFileSync(statsFile(), 'utf8').split('\n').length - 1 : 0;

  before(async () => {
    dir = tempDir('lsp-acceptance');
    const model = await makePrintableModel(path.join(dir, 'model'), { modelType: 'qwen2', seed: 7 });
    modelDir = model.dir;
    repo = initRepo(path.join(dir, 'repo'));
    commitFiles(repo, '2025-01-01T10:00:00Z', 'add', { 'src/add.ts': text });
    // A LoRA adapter for this base, as training starts one (B = 0): it serves what the base does.
    const checkpoint = await loadCheckpoint(modelDir);
    const tensors = randomLoraTensors(model.config, 2, ['q_proj'], 3);
    for (const [key, tensor] of tensors) if (key.includes('lora_B')) (tensor.data as Float32Array).fill(0);
    const registry = await Registry.open(repo);
    const staging = registry.stagingPath();
    await writeAdapter(staging, {
      config: { r: 2, alpha: 4, targets: ['q_proj'] },
      tensors,
      manifest: draftManifest({ base: { name: 'printable', sha256: checkpoint.sha256 } }),
      baseConfig: model.config,
    });
    adapterId = (await registry.add(staging)).id;
    await registry.activate(adapterId, 'complete');
  });
  afterEach(async () => {
    if (session) await stopServer(session);
    session = null;
  });
  after(() => removeDir(dir));

  async function complete(uri: string): Promise<Item | null> {
    const answer = await session!.connection.sendRequest<{ items: Item[] } | null>('textDocument/inlineCompletion', {
      textDocument: { uri },
      position: { line: 1, character: 9 },
      context: { triggerKind: 1 },
    });
    return answer?.items[0] ?? null;
  }

  it('counts shown, partial, accepted and dismissed for the serving adapter; idiom adapters --json shows them', async () => {
    session = await startServer(repo, { settings: { baseModelPath: modelDir } });
    const status = await waitForModel(session);
    assert.equal(status.state, 'ready');
    assert.equal(status.adapter?.id, adapterId);
    assert.match(status.adapter?.label ?? '', /^LoRA r\d+ · [0-9a-f]{7}$/);
    const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);

    const first = await complete(uri);
    assert.ok(first && first.insertText.length > 2, 'this checkpoint suggests something at the cursor');
    const firstId = first.command?.arguments?.[0] as string;
    assert.equal(typeof firstId, 'string');
    const partChars = 2;
    await session.connection.sendNotification(SuggestionEventNotification, { id: firstId, event: 'shown' });
    await session.connection.sendNotification(SuggestionEventNotification, {
      id: firstId,
      event: 'partial',
      chars: partChars,
    });
    await session.connection.sendNotification(SuggestionAcceptedNotification, { id: firstId });
    await waitFor('three events', () => (statsLines() === 3 ? true : undefined));

    // A torn line (a crash mid-write): counting goes on from the next line, and serving too.
    fs.appendFileSync(statsFile(), '{"at":"2026-01-01T00:00:00.000Z","event":"acce');
    const second = await complete(uri);
    assert.ok(second, 'still serving after the stats file was damaged');
    const secondId = second.command?.arguments?.[0] as string;
    assert.notEqual(secondId, firstId);
    await session.connection.sendNotification(SuggestionEventNotification, { id: secondId, event: 'shown' });
    await session.connection.sendNotification(SuggestionEventNotification, { id: secondId, event: 'dismissed' });
    // Bad input: an unknown id and an unknown event cost a log line each, and count nothing.
    await session.connection.sendNotification(SuggestionEventNotification, { id: 'nope', event: 'shown' });
    await session.connection.sendNotification('idiom/suggestionEvent', { id: secondId, event: 'clicked' });
    await waitFor('the unknown id logged', () => session!.logs.find((line) => /unknown suggestion nope/.test(line)));
    await waitFor('the bad event logged', () =>
      session!.logs.find((line) => /ignored idiom\/suggestionEvent/.test(line)),
    );
    assert.equal(statsLines(), 3 + 1 + 2);

    const expected: Acceptance = {
      shown: 2,
      accepted: 1,
      partial: 1,
      dismissed: 1,
      acceptedChars: first.insertText.length,
      rate: 1 / 2,
    };
    const run = spawnSync(process.execPath, [bin, 'adapters', '--repo', repo, '--json'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const listed = JSON.parse(run.stdout) as {
      adapters: { id: string; label: string; acceptance: Acceptance }[];
      stats: { skippedLines: number };
    };
    const row = listed.adapters.find((adapter) => adapter.id === adapterId)!;
    assert.deepEqual(row.acceptance, expected);
    assert.match(row.label, / ago$|just now$/);
    assert.equal(listed.stats.skippedLines, 1);

    // The same through the server, and the page.
    const { adapters } = await session.connection.sendRequest(AdaptersRequest, {});
    assert.deepEqual(adapters.find((adapter) => adapter.id === adapterId)?.acceptance, expected);
    const { html } = await session.connection.sendRequest(AdaptersReportRequest, {});
    assert.ok(html.includes(adapterId) && html.includes(`${expected.accepted} (50.0%)`));
    assert.equal((await session.connection.sendRequest(StatusRequest, {})).state, 'ready');
  });

  it('an untrusted workspace counts nothing: its .idiom/ is only read', async () => {
    const before = fs.readFileSync(statsFile());
    session = await startServer(repo, { trusted: false, defaultModelPath: modelDir });
    assert.equal((await waitForModel(session)).state, 'ready');
    const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);
    const item = await complete(uri);
    assert.ok(item, 'the base model serves');
    const id = item.command?.arguments?.[0] as string;
    await session.connection.sendNotification(SuggestionEventNotification, { id, event: 'shown' });
    await session.connection.sendNotification(SuggestionAcceptedNotification, { id });
    // A request after the notifications: they have been handled when it is answered.
    await session.connection.sendRequest(StatusRequest, {});
    assert.deepEqual(fs.readFileSync(statsFile()), before);
  });
});
