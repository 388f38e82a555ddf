import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ActivateRequest,
  AdaptersRequest,
  CancelTrainingRequest,
  RollbackRequest,
  IdiomErrorCodes,
  StatusRequest,
  TrainRequest,
  type TrainResult,
} from '../../../server/protocol';
import { Registry } from '../../../trainer/adapters/registry';
import { buildIdiomRepo, type IdiomRepo } from '../../fixtures/pipeline/idiom-repo';
import { makePrintableModel, type PrintableModel } from '../../fixtures/e2e-model/printable-model';
import { engineCompletion } from './reference';
import {
  inlineCompletion,
  openDocument,
  startServer,
  stopServer,
  waitFor,
  waitForModel,
  type InlineAnswer,
} from './session';

// Training through the language server: idiom/train runs the real pipeline in a child process,
// reports LSP work-done progress, keeps answering completions meanwhile, and serves the new
// adapter when it is done; a corrupt active adapter falls back to the base model with one line.

const text =
  'export function findUserById(repo: Repository<User>, id: string): User {\n  const user = repo.get(id);\n  \n}\n';
const cursor = { line: 2, character: 2 };
const offset = text.indexOf('\n  \n') + 3;
// Another document for the completion asked during training (not in the cache, so it decodes).
const otherText =
  'export function listOrdersByOwner(repo: Repository<Order>, ownerId: string): Order[] {\n  return \n}\n';
const otherCursor = { line: 1, character: 9 };
const otherOffset = otherText.indexOf('return ') + 'return '.length;

function expectedCompletion(
  model: PrintableModel,
  adapterDir: string | null,
  document = { text, offset },
): Promise<string | null> {
  return engineCompletion(model.dir, adapterDir, document);
}

function answerText(answer: InlineAnswer): string | null {
  return answer?.items[0]?.insertText ?? null;
}

describe('language server: training and adapters over stdio', function () {
  this.timeout(180_000);
  let base: string;
  let model: PrintableModel;
  let repo: IdiomRepo;
  let trained: TrainResult | undefined;

  before(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-lsp-train-'));
    model = await makePrintableModel(path.join(base, 'model'));
    repo = buildIdiomRepo(base);
  });
  after(() => fs.rmSync(base, { recursive: true, force: true }));

  it('idiom/train reports work-done progress, keeps serving completions meanwhile, and then serves the new adapter', async () => {
    const session = await startServer(
      repo.root,
      { settings: { baseModelPath: model.dir } },
      { window: { workDoneProgress: true } },
    );
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      assert.equal(ready.adapter, null);
      const uri = openDocument(session, path.join(repo.root, 'src', 'lookup.ts'), text);
      const before = answerText(await inlineCompletion(session, uri, cursor.line, cursor.character));
      assert.equal(before, await expectedCompletion(model, null), 'the base model serves before training');

      const token = 'train-1';
      let trainAnsweredAt = 0;
      const training = session.connection
        .sendRequest(TrainRequest, {
          tokens: 12_000,
          learningRate: 1e-2,
          threads: 1,
          seed: 1,
          force: true,
          workDoneToken: token,
        })
        .finally(() => (trainAnsweredAt = Date.now()));
      // A completion asked while the run is in its training steps is answered before the run ends.
      await waitFor(
        'a training step report',
        () => session.progress.find((p) => p.token === token && /^step /.test(p.value.message ?? '')),
        120_000,
      );
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).state, 'training');
      const otherUri = openDocument(session, path.join(repo.root, 'src', 'orders.ts'), otherText);
      const during = await inlineCompletion(session, otherUri, otherCursor.line, otherCursor.character);
      const duringAnsweredAt = Date.now();
      assert.ok(session.progress.some((p) => p.token === token && p.value.kind === 'end') === false, 'still training');
      assert.equal(
        answerText(during),
        await expectedCompletion(model, null, { text: otherText, offset: otherOffset }),
        'the base model still serves during training',
      );
      trained = await training;
      assert.ok(duringAnsweredAt < trainAnsweredAt, 'the completion was answered while training ran');

      // begin → reports with rising percentages and messages → end, on the client's token.
      const ours = session.progress.filter((p) => p.token === token).map((p) => p.value);
      assert.equal(ours[0].kind, 'begin');
      assert.equal(ours[0].cancellable, true);
      assert.equal(ours[ours.length - 1].kind, 'end');
      const reports = ours.filter((v) => v.kind === 'report');
      assert.ok(reports.length >= 3, `${reports.length} reports`);
      const percentages = reports.map((r) => r.percentage!);
      assert.deepEqual(
        percentages,
        [...percentages].sort((a, b) => a - b),
        'percentages never go back',
      );
      assert.ok(percentages[percentages.length - 1] >= 97, `last ${percentages[percentages.length - 1]}%`);
      for (const phase of [/^mining /, /^step \d+\/\d+ · loss/, /^evaluating /])
        assert.ok(
          reports.some((r) => phase.test(r.message ?? '')),
          `a report matching ${phase}`,
        );

      // The new adapter is registered, active, and serving: the status names it and completions
      // are what the engine decodes with it.
      assert.equal(trained.activated, true);
      assert.ok(trained.steps > 0 && trained.tokens > 0);
      const registry = await Registry.open(repo.root);
      assert.equal(await registry.activeId('complete'), trained.adapter.id);
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.state, 'ready');
      assert.equal(status.adapter?.id, trained.adapter.id);
      assert.equal(status.training, null);
      const { adapters } = await session.connection.sendRequest(AdaptersRequest, {});
      assert.deepEqual(
        adapters.filter((a) => a.active).map((a) => a.id),
        [trained.adapter.id],
      );
      const listed = adapters.find((a) => a.id === trained!.adapter.id)!;
      assert.equal(listed.report, trained.report);
      assert.match(fs.readFileSync(listed.report!, 'utf8'), /new Chart\(/);
      const after = answerText(await inlineCompletion(session, uri, cursor.line, cursor.character));
      const withAdapter = await expectedCompletion(model, trained.adapter.path);
      assert.equal(after, withAdapter);
      assert.notEqual(
        withAdapter,
        before,
        `the adapter changes what is decoded (else this check proves nothing): ${JSON.stringify([before, withAdapter])}`,
      );

      // Nothing runs now: cancel says so.
      assert.deepEqual(await session.connection.sendRequest(CancelTrainingRequest, {}), { cancelled: false });
    } finally {
      await stopServer(session);
    }
  });

  it('idiom/cancel stops a run: the request fails as cancelled, progress ends, and the active adapter stays', async () => {
    assert.ok(trained, 'needs the adapter of the previous test');
    const session = await startServer(
      repo.root,
      { settings: { baseModelPath: model.dir } },
      { window: { workDoneProgress: true } },
    );
    try {
      await waitForModel(session);
      const training = session.connection.sendRequest(TrainRequest, {
        tokens: 400_000,
        threads: 1,
        workDoneToken: 'train-2',
      });
      await waitFor(
        'a training step report',
        () => session.progress.find((p) => p.token === 'train-2' && /^step /.test(p.value.message ?? '')),
        120_000,
      );
      assert.deepEqual(await session.connection.sendRequest(CancelTrainingRequest, {}), { cancelled: true });
      await assert.rejects(training, (error: { code: number; message: string }) => {
        assert.equal(error.code, IdiomErrorCodes.cancelled);
        assert.match(error.message, /training cancelled at step \d+/);
        return true;
      });
      assert.equal(session.progress.filter((p) => p.token === 'train-2').pop()?.value.kind, 'end');
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.state, 'ready');
      assert.equal(status.adapter?.id, trained!.adapter.id);
    } finally {
      await stopServer(session);
    }
  });

  it('the progress cancel (window/workDoneProgress/cancel of a server-created token) stops a run too', async () => {
    assert.ok(trained, 'needs the adapter of the previous test');
    const session = await startServer(
      repo.root,
      { settings: { baseModelPath: model.dir } },
      { window: { workDoneProgress: true } },
    );
    try {
      await waitForModel(session);
      const training = session.connection.sendRequest(TrainRequest, { tokens: 400_000, threads: 1 });
      const step = await waitFor(
        'a training step report',
        () => session.progress.find((p) => /^step /.test(p.value.message ?? '')),
        120_000,
      );
      await session.connection.sendNotification('window/workDoneProgress/cancel', { token: step.token });
      await assert.rejects(training, (error: { code: number }) => error.code === IdiomErrorCodes.cancelled);
      assert.equal(session.progress.filter((p) => p.token === step.token).pop()?.value.kind, 'end');
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).adapter?.id, trained!.adapter.id);
    } finally {
      await stopServer(session);
    }
  });

  it('a training process killed from outside (kill -9, the OOM killer) fails the request with one line; the server keeps serving', async () => {
    assert.ok(trained, 'needs the adapter of the previous test');
    const session = await startServer(
      repo.root,
      { settings: { baseModelPath: model.dir } },
      { window: { workDoneProgress: true } },
    );
    try {
      await waitForModel(session);
      const training = session.connection.sendRequest(TrainRequest, {
        tokens: 400_000,
        threads: 1,
        workDoneToken: 'train-killed',
      });
      await waitFor(
        'a training step report',
        () => session.progress.find((p) => p.token === 'train-killed' && /^step /.test(p.value.message ?? '')),
        120_000,
      );
      // The server's only child process is the training run.
      const children = spawnSync('ps', ['-o', 'pid=', '--ppid', String(session.child.pid)], { encoding: 'utf8' })
        .stdout.trim()
        .split(/\s+/)
        .filter(Boolean);
      assert.equal(children.length, 1, `children of the server: ${children.join(', ')}`);
      process.kill(Number(children[0]), 'SIGKILL');
      await assert.rejects(training, (error: { code: number; message: string }) => {
        assert.equal(error.code, IdiomErrorCodes.trainingFailed);
        assert.match(error.message, /the training process exited \(SIGKILL\)/);
        assert.equal(error.message.split('\n').length, 1, 'one line');
        return true;
      });
      assert.equal(session.progress.filter((p) => p.token === 'train-killed').pop()?.value.kind, 'end');
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.state, 'ready');
      assert.equal(status.adapter?.id, trained!.adapter.id, 'the active adapter stays');
      const uri = openDocument(session, path.join(repo.root, 'src', 'orders.ts'), otherText);
      const after = answerText(await inlineCompletion(session, uri, otherCursor.line, otherCursor.character));
      assert.equal(
        after,
        await expectedCompletion(model, trained!.adapter.path, { text: otherText, offset: otherOffset }),
        'completions still come from the active adapter',
      );
    } finally {
      await stopServer(session);
    }
  });

  it('idiom/rollback returns to the base model and idiom/activate brings the adapter back, without a restart', async () => {
    assert.ok(trained, 'needs the adapter of the previous test');
    const session = await startServer(repo.root, { settings: { baseModelPath: model.dir } });
    try {
      assert.equal((await waitForModel(session)).adapter?.id, trained!.adapter.id);
      const uri = openDocument(session, path.join(repo.root, 'src', 'lookup.ts'), text);
      const rolledBack = await session.connection.sendRequest(RollbackRequest, {});
      assert.deepEqual(
        rolledBack.adapters.filter((a) => a.active),
        [],
      );
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).adapter, null);
      assert.equal(
        answerText(await inlineCompletion(session, uri, cursor.line, cursor.character)),
        await expectedCompletion(model, null),
      );
      const activated = await session.connection.sendRequest(ActivateRequest, { id: trained!.adapter.id });
      assert.deepEqual(
        activated.adapters.filter((a) => a.active).map((a) => a.id),
        [trained!.adapter.id],
      );
      assert.equal((await session.connection.sendRequest(StatusRequest, {})).adapter?.id, trained!.adapter.id);
      assert.equal(
        answerText(await inlineCompletion(session, uri, cursor.line, cursor.character)),
        await expectedCompletion(model, trained!.adapter.path),
      );
      await assert.rejects(
        session.connection.sendRequest(ActivateRequest, { id: '20990101-000000-abcdef' }),
        /no adapter 20990101-000000-abcdef/,
      );

      // A rollback made by another process (the CLI) reaches the running server too.
      await (await Registry.open(repo.root)).rollback('complete');
      await waitFor('the server to notice the rollback', () =>
        session.statuses[session.statuses.length - 1]?.adapter === null ? true : undefined,
      );
      assert.equal(
        answerText(await inlineCompletion(session, uri, cursor.line, cursor.character)),
        await expectedCompletion(model, null),
      );
      await (await Registry.open(repo.root)).activate(trained!.adapter.id, 'complete');
      await waitFor('the server to notice the activation', () =>
        session.statuses[session.statuses.length - 1]?.adapter?.id === trained!.adapter.id ? true : undefined,
      );
    } finally {
      await stopServer(session);
    }
  });

  it('with a corrupt adapter active, logs one clear line, says so in the status, and keeps serving the base model', async () => {
    assert.ok(trained, 'needs the adapter of the previous test');
    const weights = path.join(trained!.adapter.path, 'adapter_model.safetensors');
    const bytes = fs.readFileSync(weights);
    bytes[bytes.length - 5] ^= 0xff; // one flipped bit pattern in the last tensor's data
    fs.writeFileSync(weights, bytes);

    const session = await startServer(repo.root, { settings: { baseModelPath: model.dir } });
    try {
      const status = await waitForModel(session);
      assert.equal(status.state, 'ready', status.message);
      assert.equal(status.adapter, null);
      assert.match(
        status.adapterProblem ?? '',
        new RegExp(
          `^cannot load adapter ${trained!.adapter.id} \\(active for complete\\): .*weights sha256 .* does not match manifest\\.json.*; serving the base model$`,
        ),
      );
      const errors = session.logs.filter((line) => line.includes(`cannot load adapter ${trained!.adapter.id}`));
      assert.equal(errors.length, 1, session.logs.join('\n'));
      assert.equal(errors[0].split('\n').length, 1, 'one line');
      const uri = openDocument(session, path.join(repo.root, 'src', 'lookup.ts'), text);
      const answer = answerText(await inlineCompletion(session, uri, cursor.line, cursor.character));
      assert.equal(answer, await expectedCompletion(model, null), 'the base model serves');
    } finally {
      await stopServer(session);
    }
  });

  it('a full fine-tune trained through idiom/train serves in place of the base, without a restart', async () => {
    const session = await startServer(repo.root, { settings: { baseModelPath: model.dir } });
    try {
      await waitForModel(session);
      const result = await session.connection.sendRequest(TrainRequest, {
        method: 'full',
        tokens: 6_000,
        learningRate: 1e-3,
        threads: 1,
        seed: 2,
        force: true,
      });
      assert.equal(result.activated, true);
      const status = await session.connection.sendRequest(StatusRequest, {});
      assert.equal(status.adapter?.id, result.adapter.id);
      assert.equal(status.adapterProblem, null);
      const uri = openDocument(session, path.join(repo.root, 'src', 'lookup.ts'), text);
      const served = answerText(await inlineCompletion(session, uri, cursor.line, cursor.character));
      assert.ok(served, 'the full fine-tune completes something here');
      assert.equal(served, await engineCompletion(model.dir, result.adapter.path, { text, offset }, { kind: 'full' }));
    } finally {
      await stopServer(session);
    }
  });
  it("idiom/train with from continues a LoRA adapter (the manifest names it), and refuses a full fine-tune's", async () => {
    const session = await startServer(repo.root, { settings: { baseModelPath: model.dir } });
    try {
      await waitForModel(session);
      // The full fine-tune of the test before is active: there is no LoRA to continue.
      await assert.rejects(
        session.connection.sendRequest(TrainRequest, { from: 'active', tokens: 6_000, threads: 1 }),
        (error: Error) => {
          assert.match(error.message, /full/);
          assert.equal(error.message.split('\n').length, 1, 'one line');
          return true;
        },
      );
      // A LoRA parent of its own (the first test's adapter was corrupted on purpose since).
      const parent = await session.connection.sendRequest(TrainRequest, { tokens: 6_000, threads: 1, seed: 3 });
      const continued = await session.connection.sendRequest(TrainRequest, {
        from: parent.adapter.id,
        tokens: 6_000,
        threads: 1,
        seed: 4,
      });
      const registry = await Registry.open(repo.root);
      assert.equal((await registry.manifest(continued.adapter.id)).parent, parent.adapter.id);
    } finally {
      await stopServer(session);
    }
  });
});
