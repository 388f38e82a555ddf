import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MemoryWriter, readMemoryFile, MEMORY_FILE } from '../../../trainer/data/memory/file';
import { RepositoryMemory } from '../../../trainer/data/memory/memory';
import { recall } from '../../../server/completion/recall';
import { copyFromFile } from '../../../trainer/training/eval/replay';

// A repository that writes one call the same way everywhere: the memory must propose that line at
// the start of a new line after the same context, and mid-line after its first word.
const handlers = (name: string) => `export async function ${name}(request: Request): Promise<Response> {
  const body = await readBody(request);
  logger.info('handling ${name}', { id: request.id });
  return respond(body, { status: 200, headers: defaultHeaders });
}
`;
const files = ['users', 'orders', 'invoices', 'payments'].map((name) => ({
  path: `src/${name}.ts`,
  text: handlers(name),
}));

describe('trainer/data/memory: repository memory', () => {
  const memory = new RepositoryMemory(files);

  it('proposes the line the repository writes after the same context, at a line start', () => {
    const prefix = `export async function refunds(request: Request): Promise<Response> {
  const body = await readBody(request);
  logger.info('handling refunds', { id: request.id });
  `;
    const match = memory.lookup(prefix);
    assert.ok(match);
    assert.equal(match.text, 'return respond(body, { status: 200, headers: defaultHeaders });');
    assert.equal(match.votes, match.places);
    assert.ok(match.matchedUnits >= 6, `matched ${match.matchedUnits} units`);
  });

  it('continues a word being typed, mid-line', () => {
    const match = memory.lookup(
      `export async function refunds(request: Request): Promise<Response> {\n  const body = await rea`,
    );
    assert.equal(match?.text, 'dBody(request);');
  });

  it('ignores indentation and spacing differences', () => {
    const match = memory.lookup(`function x() {\n\t\tconst   body = await readBody( request );\n\t\t`);
    assert.equal(
      match?.text,
      "logger.info('handling users', { id: request.id });".replace('users', match!.text.match(/handling (\w+)/)![1]),
    );
  });

  it('leaves out documents past the units its index can hold, instead of failing', () => {
    const big = { path: 'big.ts', text: 'a '.repeat(1_200_000) };
    const memory = new RepositoryMemory([big, { ...big, path: 'second.ts' }, files[0]]);
    assert.equal(memory.size.documents, 1);
    // One unit per `a`, and one marks the document's end.
    assert.equal(memory.size.units, big.text.split('a').length - 1 + 1);
  });

  it('returns null when nothing agrees', () => {
    assert.equal(memory.lookup('completely unrelated words here '), null);
  });

  it('round-trips through memory.jsonl.gz and refuses a corrupt file in one line', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-memory-'));
    try {
      const writer = new MemoryWriter(files[0].text.length + files[1].text.length);
      for (const file of files) writer.add(file);
      writer.write(path.join(dir, MEMORY_FILE));
      assert.equal(writer.documents, 2);
      assert.equal(writer.skipped, 2);
      assert.deepEqual(readMemoryFile(dir), files.slice(0, 2));
      fs.writeFileSync(path.join(dir, MEMORY_FILE), 'not gzip');
      assert.throws(
        () => readMemoryFile(dir),
        (error: Error) => /not a gzip file/.test(error.message) && !error.message.includes('\n'),
      );
      assert.equal(readMemoryFile(`${os.tmpdir()}/no-such-idiom-dir`), null);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('server/completion/recall', () => {
  it('recalls a line the open document already writes after the same context', () => {
    const document = `${handlers('orders')}\n`;
    const prefix = `${document}export async function refunds(request: Request): Promise<Response> {\n  const body = await readBody(request);\n  `;
    const recalled = recall(prefix, '\n}\n', 'src/refunds.ts', null);
    assert.equal(recalled?.source, 'document');
    assert.equal(recalled?.text, "logger.info('handling orders', { id: request.id });");
  });

  it('never recalls the text after the cursor on its own line (the cursor is not its own match)', () => {
    const recalled = recall('const total = ', 'items.length;\n', 'a.ts', null);
    assert.equal(recalled, null);
  });

  it('falls back to the repository memory when the document has nothing that agrees', () => {
    const prefix = `export async function refunds(request: Request): Promise<Response> {\n  const body = await readBody(request);\n  logger.info('handling refunds', { id: request.id });\n  `;
    const recalled = recall(prefix, '\n}\n', 'src/refunds.ts', new RepositoryMemory(files));
    assert.equal(recalled?.source, 'repository');
    assert.equal(recalled?.text, 'return respond(body, { status: 200, headers: defaultHeaders });');
  });

  it("takes the open document's way when both agree, even where the repository agrees longer", () => {
    // The document's place agrees on 12 units before the cursor, the repository's on more.
    const local =
      "export function orders(request: Request) {\n  const body = await readBody(request);\n  audit('orders', request);\n}\n";
    const prefix = `${local}\nexport async function refunds(request: Request): Promise<Response> {\n  const body = await readBody(request);\n  `;
    const repository = new RepositoryMemory(files);
    assert.ok(repository.lookup(prefix)!.matchedUnits > 12);
    const recalled = recall(prefix, '\n}\n', 'src/refunds.ts', repository);
    assert.equal(recalled?.source, 'document');
    assert.equal(recalled?.text, "audit('orders', request);");
  });

  it('holds back a short or split agreement', () => {
    const memory = new RepositoryMemory([
      { path: 'a.ts', text: 'x = f(1);\n' },
      { path: 'b.ts', text: 'x = f(2);\n' },
    ]);
    assert.equal(recall('x = ', '', 'c.ts', memory), null);
  });
});

describe('copy-from-file reference', () => {
  it('proposes what followed the longest earlier occurrence of the text before the cursor', () => {
    assert.equal(copyFromFile('a = load(x);\nb = 1;\na = load(x);\nb'), ' = 1;');
    assert.equal(copyFromFile('nothing repeats'), '');
  });
});
