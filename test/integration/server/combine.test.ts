import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import * as path from 'node:path';
import { combineAdapters } from '../../../trainer/adapters/combine';
import { loadAdapter, peftTensorsOf, writeAdapter, type LoadedAdapter } from '../../../trainer/adapters/peft';
import { Registry } from '../../../trainer/adapters/registry';
import { MEMORY_FILE } from '../../../trainer/data/memory/file';
import { loadCheckpoint } from '../../../trainer/model/checkpoint';
import type { Projection } from '../../../trainer/model/config';
import { CombineAdaptersRequest, StatusRequest, type StatusResult } from '../../../server/protocol';
import { draftManifest, randomLoraTensors } from '../../unit/adapters/helpers';
import { makePrintableModel, type PrintableModel } from '../../fixtures/e2e-model/printable-model';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { engineCompletion } from './reference';
import {
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  uncheckedRecall,
  waitFor,
  waitForModel,
} from './session';

// Two registry adapters combined for the session over stdio (idiom/combineAdapters): the status
// names the combination, the ghost text is what the engine decodes with the combined adapter, a
// combination of adapters of another base is refused in one line while serving goes on, and the
// idiom.adapters setting combines too.

describe('language server: adapters combined per session', function () {
  this.timeout(120_000);
  let dir: string;
  let repo: string;
  let model: PrintableModel;
  const ids = { team: '', mine: '', other: '' };
  const loaded: Record<string, LoadedAdapter> = {};
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  before(async () => {
    dir = tempDir('lsp-combine');
    model = await makePrintableModel(path.join(dir, 'model'), { modelType: 'qwen2', seed: 7 });
    repo = initRepo(path.join(dir, 'repo'));
    commitFiles(repo, '2025-01-01T10:00:00Z', 'add', { 'src/add.ts': text });
    const checkpoint = await loadCheckpoint(model.dir);
    const registry = await Registry.open(repo);
    const specs: Array<[keyof typeof ids, number, Projection[], string]> = [
      ['team', 2, ['q_proj', 'v_proj'], checkpoint.sha256],
      ['mine', 3, ['v_proj', 'o_proj', 'down_proj'], checkpoint.sha256],
      ['other', 2, ['q_proj'], 'c'.repeat(64)],
    ];
    let second = 0;
    for (const [name, r, targets, baseSha256] of specs) {
      const staging = registry.stagingPath();
      await writeAdapter(staging, {
        config: { r, alpha: 2 * r, targets },
        tensors: randomLoraTensors(model.config, r, targets, 40 + second),
        manifest: draftManifest({
          created: new Date(Date.UTC(2026, 0, 1, 0, 0, ++second)).toISOString(),
          base: { name: 'printable', sha256: baseSha256 },
        }),
        baseConfig: model.config,
      });
      ids[name] = (await registry.add(staging)).id;
      if (name !== 'other') loaded[name] = await loadAdapter(registry.adapterPath(ids[name]), model.config);
    }
    await registry.activate(ids.team, 'complete');
  });
  after(() => removeDir(dir));

  /** The combination written as one PEFT adapter (r = alpha = Σ r: scaling 1), for the engine reference. */
  async function combinedFolder(weights: { team: number; mine: number }): Promise<string> {
    const combined = combineAdapters([
      { id: ids.team, weight: weights.team, adapter: loaded.team },
      { id: ids.mine, weight: weights.mine, adapter: loaded.mine },
    ]);
    const folder = path.join(dir, `combined-${weights.team}-${weights.mine}`);
    const { r, targets } = combined.adapter.config;
    const checkpoint = await loadCheckpoint(model.dir);
    await writeAdapter(folder, {
      config: { r, alpha: r, targets },
      tensors: peftTensorsOf(combined.adapter),
      manifest: draftManifest({ base: { name: 'printable', sha256: checkpoint.sha256 } }),
      baseConfig: model.config,
    });
    return folder;
  }

  it('serves the combination as one adapter, refuses another base in one line, and follows the setting', async () => {
    const teamOnly = await engineCompletion(model.dir, loaded.team.dir, { text, offset });
    const expected = await engineCompletion(model.dir, await combinedFolder({ team: 1, mine: 0.5 }), { text, offset });
    assert.ok(expected, 'the combined adapter decodes something at the cursor');
    assert.notEqual(
      expected,
      teamOnly,
      'the combination must decode differently from team alone, or this proves little',
    );

    const session = await startServer(repo, { settings: { baseModelPath: model.dir } });
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      assert.equal(ready.adapter?.id, ids.team);
      const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);
      const answer = async () => (await inlineCompletion(session, uri, 1, 9))?.items.map((item) => item.insertText);
      assert.deepEqual(await answer(), [teamOnly]);

      const parts = [
        { id: ids.team, weight: 1 },
        { id: ids.mine, weight: 0.5 },
      ];
      const label = `${ids.team}×1 + ${ids.mine}×0.5`;
      const result = await session.connection.sendRequest(CombineAdaptersRequest, { adapters: parts });
      assert.deepEqual(result.combination, { adapters: parts, label, source: 'session' });
      assert.equal(result.status.combination?.label, label);
      assert.equal(result.status.adapter, null);
      assert.match(result.status.message, new RegExp(`serving model \\+ ${label.replace(/[+.]/g, '\\$&')}`));
      assert.deepEqual(await answer(), [expected]);

      // Another base: refused in one line naming both; the combination keeps serving.
      await assert.rejects(
        session.connection.sendRequest(CombineAdaptersRequest, {
          adapters: [
            { id: ids.team, weight: 1 },
            { id: ids.other, weight: 1 },
          ],
        }),
        (error: Error & { code?: number }) => {
          assert.match(
            error.message,
            new RegExp(`cannot combine adapters ${ids.team} and ${ids.other}: different bases`),
          );
          assert.doesNotMatch(error.message, /\n/);
          assert.equal(error.code, -32602);
          return true;
        },
      );
      const after = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(after.combination?.label, label);
      assert.deepEqual(await answer(), [expected]);

      // [] drops the session's choice: the active adapter serves again.
      const cleared = await session.connection.sendRequest(CombineAdaptersRequest, { adapters: [] });
      assert.equal(cleared.combination, null);
      assert.equal(cleared.status.adapter?.id, ids.team);
      assert.deepEqual(await answer(), [teamOnly]);

      // The idiom.adapters setting combines too (weight 1 when left out).
      const settingExpected = await engineCompletion(model.dir, await combinedFolder({ team: 1, mine: 1 }), {
        text,
        offset,
      });
      await session.connection.sendNotification('workspace/didChangeConfiguration', {
        settings: { idiom: { adapters: { complete: [{ id: ids.team }, { id: ids.mine, weight: 1 }] } } },
      });
      const bySetting = await waitFor('the setting to serve', () => {
        const last: StatusResult | undefined = session.statuses[session.statuses.length - 1];
        return last?.combination?.source === 'setting' ? last : undefined;
      });
      assert.equal(bySetting.combination?.label, `${ids.team}×1 + ${ids.mine}×1`);
      assert.deepEqual(await answer(), [settingExpected]);

      // A setting that cannot combine serves the base, and says why in the status.
      await session.connection.sendNotification('workspace/didChangeConfiguration', {
        settings: { idiom: { adapters: { complete: [{ id: ids.other }, { id: ids.mine }] } } },
      });
      const refused = await waitFor('the bad setting to be reported', () => {
        const last: StatusResult | undefined = session.statuses[session.statuses.length - 1];
        return last?.adapterProblem ? last : undefined;
      });
      assert.match(refused.adapterProblem ?? '', /different bases.*serving the base model$/);
      assert.equal(refused.combination, null);
      const base = await engineCompletion(model.dir, null, { text, offset });
      assert.deepEqual(await answer(), base === null ? undefined : [base]);
    } finally {
      await stopServer(session);
    }
  });
  it("recalls from the combined adapters' repository memory", async () => {
    const registry = await Registry.open(repo);
    const line = 'return lines.reduce((sum, line) => sum + line.amount, 0);';
    const head = 'export function invoiceTotal(lines: Line[], currency: string) {\n  ';
    fs.writeFileSync(
      path.join(registry.adapterPath(ids.mine), MEMORY_FILE),
      zlib.gzipSync(JSON.stringify({ path: 'src/invoice.ts', text: `${head}${line}\n}\n` })),
    );
    // Only recall shows (the model never passes a gate of 1).
    const session = await startServer(repo, {
      // Random weights cannot judge a line: the recall check is off here (recall-check.test.ts tests it).
      settings: {
        baseModelPath: model.dir,
        completion: { minConfidence: 1, recall: true, prompt: 'prefix', ...uncheckedRecall },
      },
    });
    try {
      await waitForModel(session);
      const document = `// totals\n${head}`;
      const uri = openDocument(session, path.join(repo, 'src', 'totals.ts'), document);
      const answer = async () => (await inlineCompletion(session, uri, 2, 2))?.items[0]?.insertText ?? null;
      assert.equal(await answer(), null, 'the active adapter alone carries no memory');
      await session.connection.sendRequest(CombineAdaptersRequest, {
        adapters: [
          { id: ids.team, weight: 0.5 },
          { id: ids.mine, weight: 1 },
        ],
      });
      assert.equal(await answer(), line);
    } finally {
      await stopServer(session);
      fs.rmSync(path.join(registry.adapterPath(ids.mine), MEMORY_FILE), { force: true });
    }
  });
});
