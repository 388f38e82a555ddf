import { strict as assert } from 'node:assert';
import {
  buildExamples,
  DEFAULT_EXAMPLE_OPTIONS,
  windowsOf,
  type Example,
  type FimExample,
} from '../../../trainer/data/mining/examples';
import { languageById } from '../../../trainer/data/mining/languages';
import { indexSyntax } from '../../../trainer/data/mining/syntax';

function program(functions: number): string {
  const parts: string[] = ["import { readFileSync } from 'node:fs';\n"];
  for (let i = 0; i < functions; i++) {
    parts.push(
      `export function load${i}(path: string, limit = ${i}): string[] {\n` +
        `  const lines = readFileSync(path, 'utf8').split('\\n');\n` +
        `  if (lines.length > limit) {\n    return lines.slice(0, limit);\n  }\n` +
        `  return lines.map((line) => line.trim());\n}\n`,
    );
  }
  return parts.join('\n');
}

const textOf = (example: Example) =>
  example.kind === 'plain' ? example.text : example.prefix + example.middle + example.suffix;

describe('mining/examples', () => {
  const text = program(80);
  const options = { ...DEFAULT_EXAMPLE_OPTIONS, windowChars: 1200 };

  it('cuts windows at line starts, covering the file exactly once', async () => {
    const syntax = await indexSyntax(text, languageById('typescript')!);
    const windows = windowsOf(text, syntax, 1200);
    assert.equal(windows[0][0], 0);
    assert.equal(windows[windows.length - 1][1], text.length);
    for (let i = 0; i < windows.length; i++) {
      const [start, end] = windows[i];
      assert.ok(end - start <= 1200);
      if (i > 0) assert.equal(start, windows[i - 1][1]);
      if (start > 0) assert.equal(text[start - 1], '\n');
    }
  });

  it('mixes plain and FIM examples whose pieces rebuild the file', async () => {
    const syntax = await indexSyntax(text, languageById('typescript')!);
    const examples = buildExamples(
      { path: 'src/load.ts', language: 'typescript', text, split: 'train' },
      syntax,
      options,
    );
    assert.equal(examples.map(textOf).join(''), text);
    const fim = examples.filter((example): example is FimExample => example.kind !== 'plain');
    const plain = examples.length - fim.length;
    assert.ok(fim.length > 0 && plain > 0, `${fim.length} FIM, ${plain} plain`);
    const kinds = new Set(fim.map((example) => example.kind));
    assert.ok(kinds.size >= 2, [...kinds].join());
    for (const example of fim) {
      assert.ok(example.middle.trim().length > 0);
      const lineStart = example.prefix.lastIndexOf('\n') + 1;
      const before = example.prefix.slice(lineStart);
      if (example.kind === 'fim-block') {
        assert.match(before, /^[ \t]*$/, 'a block middle starts its line');
        assert.ok(example.middle.endsWith('\n') || example.suffix === '');
      } else if (example.kind === 'fim-line-rest') {
        assert.ok(!example.middle.includes('\n'));
        assert.ok(example.suffix === '' || example.suffix.startsWith('\n'));
      } else {
        assert.ok(!example.middle.includes('\n'));
        assert.ok(!/^[ \t]*(\n|$)/.test(example.suffix), 'code follows a line-part middle');
      }
    }
  });

  it('honours the FIM rate', async () => {
    const syntax = await indexSyntax(text, languageById('typescript')!);
    const source = { path: 'src/load.ts', language: 'typescript', text, split: 'train' as const };
    const none = buildExamples(source, syntax, { ...options, fimRate: 0 });
    assert.ok(none.every((example) => example.kind === 'plain'));
    const all = buildExamples(source, syntax, { ...options, fimRate: 1 });
    assert.ok(all.every((example) => example.kind !== 'plain'));
  });

  it('is deterministic for a seed and changes with it', async () => {
    const syntax = await indexSyntax(text, languageById('typescript')!);
    const source = { path: 'src/load.ts', language: 'typescript', text, split: 'train' as const };
    const a = JSON.stringify(buildExamples(source, syntax, options));
    const b = JSON.stringify(buildExamples(source, syntax, options));
    const c = JSON.stringify(buildExamples(source, syntax, { ...options, seed: 1 }));
    assert.equal(a, b);
    assert.notEqual(a, c);
  });

  it('turns changed lines of a held-out file into line completions', async () => {
    const syntax = await indexSyntax(text, languageById('typescript')!);
    const lines = text.split('\n');
    const changed = [3, 4, 10, 11, 12];
    const examples = buildExamples(
      { path: 'src/load.ts', language: 'typescript', text, split: 'heldout', changedLines: changed },
      syntax,
      options,
    );
    assert.ok(examples.every((example) => example.split === 'heldout'));
    const plain = examples.filter((example) => example.kind === 'plain');
    assert.equal(plain.map(textOf).join(''), text, 'held-out files are also kept whole, for loss');
    const completions = examples.filter((example): example is FimExample => example.kind !== 'plain');
    const eligible = changed.filter((line) => lines[line - 1].trim().length >= 3);
    assert.equal(completions.length, eligible.length);
    completions.forEach((example, k) => {
      assert.equal(example.middle, lines[eligible[k] - 1].trim());
      assert.ok(text.includes(example.prefix + example.middle + example.suffix));
    });
  });
});
