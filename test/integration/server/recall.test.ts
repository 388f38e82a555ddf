import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MEMORY_FILE, readMemoryFile } from '../../../trainer/data/memory/file';
import { makePrintableModel, type PrintableModel } from '../../fixtures/e2e-model/printable-model';
import { commitFiles, initRepo, removeDir, tempDir } from '../../fixtures/mining/git-repo';
import { engineCompletion } from './reference';
import { bin, inlineCompletion, openDocument, startServer, stopServer, uncheckedRecall, waitForModel } from './session';

// Repository memory over stdio: a real (tiny) `idiom train` writes memory.jsonl.gz into the
// adapter folder, the server serving that adapter loads it, and a line the repository always
// writes after the same context is recalled exactly where the model alone writes something else.

// The line under test, written after the same two lines in every module of the repository.
const RECALLED = "audit.record('saved', item.id, store.region);";

function saveModule(type: string): string {
  return `import { audit, openStore } from './core';

export function save${type}(item: ${type}): void {
  const store = openStore(item.region);
  ${RECALLED}
  store.put(item);
}
`;
}

// A new file written the same way, the cursor at the start of that line (after its indentation).
const DOCUMENT =
  "import { audit, openStore } from './core';\n\nexport function saveRefund(item: Refund): void {\n  const store = openStore(item.region);\n  \n}\n";
const cursor = { line: 4, character: 2 };
const offset = DOCUMENT.indexOf('\n  \n') + 3;

describe("language server: recall from the adapter's repository memory over stdio", function () {
  this.timeout(60_000);
  let base: string;
  let root: string;
  let model: PrintableModel;
  let adapter: { id: string; path: string };

  before(async () => {
    base = tempDir('recall');
    model = await makePrintableModel(path.join(base, 'model'));
    root = initRepo(path.join(base, 'repo'));
    commitFiles(root, '2024-03-01T09:00:00Z', 'core', {
      'src/core.ts':
        'export const audit = { record(kind: string, id: string, region: string): void {} };\nexport function openStore(region: string): Store {\n  return stores.get(region)!;\n}\n',
    });
    ['Invoice', 'Order', 'Ticket', 'Coupon'].forEach((type, i) =>
      commitFiles(root, `2024-03-0${i + 2}T09:00:00Z`, type, { [`src/${type.toLowerCase()}.ts`]: saveModule(type) }),
    );
    // The newest commit is held out (never trained on, not in the memory).
    commitFiles(root, '2024-03-10T09:00:00Z', 'vendor', { 'src/vendor.ts': saveModule('Vendor') });

    // A real training run, as small as it gets: the adapter barely moves, the memory is whole.
    const out = spawnSync(
      process.execPath,
      [
        bin,
        'train',
        root,
        '--base',
        model.dir,
        '--json',
        '--tokens',
        '512',
        '--threads',
        '1',
        '--max-lines',
        '1',
        '--max-score-tokens',
        '256',
        '--seed',
        '1',
        '--no-report',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(out.status, 0, out.stderr);
    const result = JSON.parse(out.stdout.trim().split('\n').pop()!) as {
      type: string;
      adapter: { id: string; path: string };
    };
    assert.equal(result.type, 'result');
    adapter = result.adapter;
    const memory = readMemoryFile(adapter.path);
    assert.ok(
      memory?.some((document) => document.text.includes(RECALLED)),
      `${MEMORY_FILE} in the adapter folder holds the repository's line`,
    );
    assert.ok(!DOCUMENT.includes(RECALLED), 'the open document alone cannot supply the line');
  });
  after(() => removeDir(base));

  async function ghostText(pinned: string, recall: boolean): Promise<string | null> {
    const session = await startServer(root, {
      adapter: pinned,
      // Random weights cannot judge a line: the recall check is off here (recall-check.test.ts tests it).
      settings: {
        baseModelPath: model.dir,
        completion: { minConfidence: 0, recall, prompt: 'fim', ...uncheckedRecall },
      },
    });
    try {
      const ready = await waitForModel(session);
      assert.equal(ready.state, 'ready', ready.message);
      assert.equal(ready.adapter?.id ?? 'none', pinned);
      const uri = openDocument(session, path.join(root, 'src', 'refund.ts'), DOCUMENT);
      const answer = await inlineCompletion(session, uri, cursor.line, cursor.character);
      return answer?.items[0]?.insertText ?? null;
    } finally {
      await stopServer(session);
    }
  }

  it("shows the repository's line with recall on, and what the model decodes with it off", async () => {
    assert.equal(await ghostText(adapter.id, true), RECALLED);
    const alone = await ghostText(adapter.id, false);
    assert.equal(
      alone,
      await engineCompletion(model.dir, adapter.path, { text: DOCUMENT, offset }),
      "recall off: the model's own decode",
    );
    assert.ok(alone, 'the model alone shows a suggestion here (gate off)');
    assert.notEqual(alone, RECALLED);
  });

  it('never recalls a credential from the open document: the line is withheld and logged by kind only', async () => {
    // A planted key, built at run time so no scanner flags this test file.
    const key = ['AKIA', 'Q3EGRWZL', 'X7M4TK2N'].join('');
    const keyLine = `const awsKey = '${key}';`;
    const text = `function first() {\n  const region = pick();\n  ${keyLine}\n  use(awsKey);\n}\n\nfunction second() {\n  const region = pick();\n  \n}\n`;
    const session = await startServer(root, {
      adapter: 'none',
      settings: { baseModelPath: model.dir, completion: { minConfidence: 1, recall: true, prompt: 'fim' } },
    });
    try {
      assert.equal((await waitForModel(session)).state, 'ready');
      const uri = openDocument(session, path.join(root, 'src', 'keys.ts'), text);
      const answer = await inlineCompletion(session, uri, 8, 2);
      assert.equal(answer?.items[0]?.insertText ?? null, null);
      assert.ok(
        session.logs.some((line) => /looked like a credential \(aws-access-key-id\) was withheld/.test(line)),
        session.logs.join('\n'),
      );
      assert.ok(!session.logs.some((line) => line.includes(key)), 'the log never carries the key');
    } finally {
      await stopServer(session);
    }
  });

  it('recalls nothing from the repository when the serving adapter carries no memory (the base alone)', async () => {
    assert.ok(fs.existsSync(path.join(adapter.path, MEMORY_FILE)));
    assert.notEqual(await ghostText('none', true), RECALLED);
  });
});
