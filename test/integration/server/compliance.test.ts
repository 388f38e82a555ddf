import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  AUDIT_FILE,
  AuditLog,
  headFileOf,
  parseEntryLine,
  verifyAuditLog,
} from '../../../trainer/modes/compliance/audit';
import { sha256Hex } from '../../../trainer/modes/compliance/policy';
import {
  SetModeRequest,
  StatusRequest,
  SuggestionAcceptedNotification,
  suggestionAcceptedCommand,
} from '../../../server/protocol';
import { makePrintableModel } from '../../fixtures/e2e-model/printable-model';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { engineCompletion } from './reference';
import { openDocument, startServer, stopServer, waitFor, waitForModel, type Session } from './session';

// Compliance mode over stdio with the real engine: the policy's banned pattern is taken from what
// this checkpoint actually decodes at the cursor, so that suggestion must be blocked (never
// returned); with a policy it passes, it is served with an accept command; every event lands in
// the hash-chained audit log, which verifies.

type ItemWithCommand = { insertText: string; command?: { command: string; arguments?: unknown[] } };

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function auditEvents(file: string): string[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => parseEntryLine(line)?.event ?? 'unparsable');
}

describe('language server: compliance mode checks and audits every suggestion', function () {
  this.timeout(90_000);
  let dir: string;
  let repo: string;
  let modelDir: string;
  let session: Session | null = null;
  const text = 'export function add(a: number, b: number) {\n  return \n}\n';
  const offset = text.indexOf('return ') + 'return '.length;

  before(async () => {
    dir = tempDir('lsp-compliance');
    modelDir = path.join(dir, 'model');
    await makePrintableModel(modelDir, { modelType: 'qwen2', seed: 7 });
    repo = initRepo(path.join(dir, 'repo'));
    commitFiles(repo, '2025-01-01T10:00:00Z', 'add', { 'src/add.ts': text });
  });
  afterEach(async () => {
    if (session) await stopServer(session);
    session = null;
  });
  after(() => removeDir(dir));

  async function complete(uri: string): Promise<ItemWithCommand[] | null> {
    const answer = await session!.connection.sendRequest<{ items: ItemWithCommand[] } | null>(
      'textDocument/inlineCompletion',
      {
        textDocument: { uri },
        position: { line: 1, character: 9 },
        context: { triggerKind: 1 },
      },
    );
    return answer ? answer.items : null;
  }

  it('blocks a suggestion with a banned pattern, serves and audits an allowed one, logs its accept; the log verifies', async () => {
    const expected = await engineCompletion(modelDir, null, { text, offset });
    assert.ok(
      expected && expected.trim() !== '',
      'this checkpoint decodes something at the cursor (else the check proves little)',
    );
    // The banned pattern: the first few visible characters the model would suggest.
    const banned = expected.trim().slice(0, 3);
    const policyFile = path.join(repo, 'idiom-policy.json');
    const paths = { training: ['src/**'], context: ['src/**'] };
    fs.writeFileSync(
      policyFile,
      JSON.stringify({
        version: 1,
        paths,
        bannedPatterns: [{ pattern: escapeRegExp(banned), message: 'banned in this test' }],
      }),
    );
    const auditFile = path.join(repo, '.idiom', AUDIT_FILE);

    session = await startServer(repo, { settings: { baseModelPath: modelDir } });
    assert.equal((await waitForModel(session)).state, 'ready');
    const status = await session.connection.sendRequest(SetModeRequest, { mode: 'compliance' });
    assert.equal(status.mode, 'compliance');
    const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);

    assert.equal(await complete(uri), null, `a suggestion containing ${JSON.stringify(banned)} was shown`);
    assert.deepEqual(auditEvents(auditFile), ['blocked']);

    // A policy the same suggestion passes (re-read on change): served, with the accept command.
    fs.writeFileSync(
      policyFile,
      JSON.stringify({
        version: 1,
        paths,
        bannedPatterns: [`${escapeRegExp(banned)}_never_in_this_suggestion_\\d{9}`],
      }),
    );
    const items = await complete(uri);
    assert.deepEqual(
      items?.map((item) => item.insertText),
      [expected],
    );
    const command = items![0].command!;
    assert.equal(command.command, suggestionAcceptedCommand);
    assert.equal(typeof command.arguments?.[0], 'string');
    assert.deepEqual(auditEvents(auditFile), ['blocked', 'served']);

    await session.connection.sendNotification(SuggestionAcceptedNotification, { id: command.arguments![0] as string });
    await waitFor('the accepted entry', () => (auditEvents(auditFile).length === 3 ? true : undefined));
    assert.deepEqual(auditEvents(auditFile), ['blocked', 'served', 'accepted']);

    const verification = verifyAuditLog(auditFile);
    assert.ok(verification.ok, verification.message);
    assert.equal(verification.entries, 3);
    const entries = fs
      .readFileSync(auditFile, 'utf8')
      .trim()
      .split('\n')
      .map((line) => parseEntryLine(line)!);
    const blocked = entries[0];
    assert.equal(blocked.mode, 'compliance');
    assert.deepEqual(blocked.adapter, { id: null, sha256: null }, 'the base model served (no adapter trained)');
    assert.equal(blocked.pathSha256, sha256Hex('src/add.ts'));
    assert.equal(blocked.suggestionSha256, sha256Hex(expected));
    assert.ok(blocked.verdicts.some((verdict) => verdict.rule === 'banned-pattern' && !verdict.passed));
    assert.ok(entries[1].verdicts.every((verdict) => verdict.passed));
    assert.equal(entries[2].suggestionSha256, entries[1].suggestionSha256);
    assert.equal(entries[1].policySha256, sha256Hex(fs.readFileSync(policyFile, 'utf8')));
  });

  it('a tampered audit log: nothing is served, one line says why, the server keeps serving; a recorded repair lets it go on', async () => {
    const policyFile = path.join(repo, 'idiom-policy.json');
    fs.writeFileSync(policyFile, JSON.stringify({ version: 1, paths: { training: ['src/**'], context: ['src/**'] } }));
    const auditFile = path.join(repo, '.idiom', AUDIT_FILE);
    fs.rmSync(auditFile, { force: true });
    fs.rmSync(headFileOf(auditFile), { force: true });
    // Every suggestion of this random checkpoint shown: the test is about the log, not the confidence gate.
    session = await startServer(repo, {
      settings: {
        baseModelPath: modelDir,
        mode: 'compliance',
        completion: { minConfidence: 0, recall: false, prompt: 'fim' },
      },
    });
    assert.equal((await waitForModel(session)).state, 'ready');
    const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);
    assert.equal((await complete(uri))?.length, 1, 'an intact log: served');

    fs.truncateSync(auditFile, fs.statSync(auditFile).size - 10);
    const tampered = fs.readFileSync(auditFile);
    assert.equal(await complete(uri), null, 'served although its audit entry could not be written');
    const line = await waitFor('the refusal in the log', () =>
      session!.logs.find((l) => /cannot write the audit log/.test(l)),
    );
    assert.match(line, /incomplete line.*idiom audit repair/);
    assert.doesNotMatch(line, /\n/);
    assert.deepEqual(fs.readFileSync(auditFile), tampered, 'the server cut or changed the tampered log');

    // Still serving: its status, and completions outside compliance mode.
    assert.equal((await session.connection.sendRequest(StatusRequest, {})).state, 'ready');
    await session.connection.sendRequest(SetModeRequest, { mode: 'complete' });
    assert.equal((await complete(uri))?.length, 1);
    await session.connection.sendRequest(SetModeRequest, { mode: 'compliance' });
    assert.equal(await complete(uri), null);

    await AuditLog.open(auditFile).repair('test: torn by hand');
    assert.equal((await complete(uri))?.length, 1, 'after the repair compliance mode serves again');
    const verification = verifyAuditLog(auditFile);
    assert.ok(verification.ok, verification.message);
    assert.equal(verification.repairs.length, 1);
  });

  it('without a policy file compliance mode serves nothing (fails closed)', async () => {
    fs.rmSync(path.join(repo, 'idiom-policy.json'), { force: true });
    session = await startServer(repo, { settings: { baseModelPath: modelDir, mode: 'compliance' } });
    assert.equal((await waitForModel(session)).state, 'ready');
    const uri = openDocument(session, path.join(repo, 'src', 'add.ts'), text);
    assert.equal(await complete(uri), null);
  });
});
