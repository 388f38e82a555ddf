import { strict as assert } from 'node:assert';
import { languageById } from '../../../trainer/data/mining/languages';
import { indexSyntax } from '../../../trainer/data/mining/syntax';

// One small program per required language: [language, source, expected chunks "kind name"].
const PROGRAMS: [string, string, string[]][] = [
  [
    'typescript',
    'export class Stack<T> {\n  private items: T[] = [];\n  push(item: T): void {\n    this.items.push(item);\n  }\n}\n\nexport function top(s: Stack<number>) {\n  return s;\n}\n',
    ['class Stack', 'method push', 'function top'],
  ],
  [
    'tsx',
    'export function Badge(props: { label: string }) {\n  return <span>{props.label}</span>;\n}\n',
    ['function Badge'],
  ],
  [
    'javascript',
    'class Timer {\n  start() {\n    return Date.now();\n  }\n}\nconst stop = (t) => {\n  return t;\n};\n',
    ['class Timer', 'method start', 'function stop'],
  ],
  [
    'python',
    'class Repo:\n    def mine(self):\n        return []\n\n\ndef main():\n    Repo().mine()\n',
    ['class Repo', 'method mine', 'function main'],
  ],
  [
    'go',
    'package repo\n\ntype Repo struct{}\n\nfunc (r *Repo) Mine() int {\n\treturn 1\n}\n\nfunc New() *Repo {\n\treturn &Repo{}\n}\n',
    ['class null', 'method Mine', 'function New'],
  ],
  [
    'rust',
    'struct Repo;\n\nimpl Repo {\n    fn mine(&self) -> u32 {\n        1\n    }\n}\n\nfn main() {}\n',
    ['class Repo', 'class null', 'method mine', 'function main'],
  ],
  [
    'java',
    'public class Repo {\n  public Repo() {}\n  int mine() {\n    return 1;\n  }\n}\n',
    ['class Repo', 'method Repo', 'method mine'],
  ],
];

describe('mining/syntax', () => {
  for (const [id, source, expected] of PROGRAMS) {
    it(`chunks ${id} into functions, methods and classes`, async () => {
      const index = await indexSyntax(source, languageById(id)!);
      assert.equal(index.hasErrors, false);
      assert.deepEqual(
        index.chunks.map((chunk) => `${chunk.kind} ${chunk.name}`),
        expected,
      );
      for (const chunk of index.chunks) {
        assert.ok(chunk.startIndex < chunk.endIndex && chunk.endIndex <= source.length);
        assert.ok(chunk.endLine >= chunk.startLine);
      }
      assert.ok(index.nodeCount > index.chunks.length);
    });
  }

  it('gives UTF-8 byte ranges next to string offsets', async () => {
    const source = '// héllo 😀\nfunction f() {\n  return "ü";\n}\n';
    const [chunk] = (await indexSyntax(source, languageById('javascript')!)).chunks;
    assert.equal(source.slice(chunk.startIndex, chunk.endIndex), 'function f() {\n  return "ü";\n}');
    const bytes = Buffer.from(source, 'utf8');
    assert.equal(bytes.subarray(chunk.startByte, chunk.endByte).toString('utf8'), 'function f() {\n  return "ü";\n}');
    assert.notEqual(chunk.startByte, chunk.startIndex);
  });

  it('indexes a file with syntax errors without failing', async () => {
    const index = await indexSyntax('function ok() {\n  return 1;\n}\nconst x = ;\n', languageById('typescript')!);
    assert.equal(index.hasErrors, true);
    assert.ok(index.chunks.some((chunk) => chunk.name === 'ok'));
  });
});
