import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  buildFimPrompt,
  defaultPromptBudget,
  formatSnippets,
  promptTokensFor,
  takeHeadLines,
  takeTailLines,
  type PromptTokenizer,
} from '../../../server/completion/prompt';
import type { FimTemplate } from '../../../trainer/model/tokenizer/fim';
import { promptTokenBudget } from '../../../server/completion/provider';
import { countParameters, loadModelConfig, parseModelConfig } from '../../../trainer/model/config';
import { AUTO_INT8_PARAMETERS } from '../../../trainer/model/precision';

// A byte-level tokenizer with no merges: one token per UTF-8 byte, so counts are easy to compute.
const bytes: PromptTokenizer = { encode: (text) => new TextEncoder().encode(text) };
const decode = (tokens: ArrayLike<number>) => new TextDecoder().decode(Uint8Array.from(Array.from(tokens)));
const fim: FimTemplate = { family: 'qwen', prefix: 1001, suffix: 1002, middle: 1003, bos: null, end: null };

function numberedLines(count: number, tag: string): string {
  return Array.from({ length: count }, (_, i) => `${tag} line ${i}`).join('\n');
}

describe('server/completion/prompt', () => {
  it('keeps a short document whole, in PSM order', () => {
    const prompt = buildFimPrompt(
      { prefix: 'const a = ', suffix: ';\n', languageId: 'typescript', snippets: [] },
      bytes,
      fim,
    );
    const tokens = Array.from(prompt.tokens);
    assert.equal(tokens[0], fim.prefix);
    assert.equal(tokens[tokens.length - 1], fim.middle);
    const suffixAt = tokens.indexOf(fim.suffix);
    assert.equal(decode(tokens.slice(1, suffixAt)), 'const a = ');
    assert.equal(decode(tokens.slice(suffixAt + 1, -1)), ';\n');
  });

  it('keeps the ends of a cursor line too long for the budget (minified code) and never tokenizes the whole document', () => {
    const line = 'var a=function(b){return b+1};'.repeat(40_000); // 1.2 MB, one line
    const half = line.length / 2;
    let encoded = 0;
    const counting: PromptTokenizer = {
      encode: (text) => {
        encoded += text.length;
        return bytes.encode(text);
      },
    };
    const budget = { maxTokens: 512, suffixShare: 0.25, contextShare: 0 };
    const prompt = buildFimPrompt(
      { prefix: line.slice(0, half), suffix: line.slice(half), languageId: 'javascript', snippets: [] },
      counting,
      fim,
      budget,
    );
    assert.ok(prompt.tokens.length <= budget.maxTokens);
    assert.ok(prompt.prefixText.length > 0.5 * (budget.maxTokens - 3), `prefix ${prompt.prefixText.length} characters`);
    assert.ok(line.slice(0, half).endsWith(prompt.prefixText), 'the text right before the cursor');
    assert.ok(
      prompt.suffixText.length > 0 && line.slice(half).startsWith(prompt.suffixText),
      'the text right after the cursor',
    );
    assert.ok(encoded < 0.1 * line.length, `tokenized ${encoded} of ${line.length} characters`);
  });

  it('cuts a long prefix at a line start and stays within the budget', () => {
    const prefix = `${numberedLines(500, 'p')}\n  return `;
    const budget = { maxTokens: 256, suffixShare: 0.25, contextShare: 0 };
    const prompt = buildFimPrompt({ prefix, suffix: '', languageId: 'typescript', snippets: [] }, bytes, fim, budget);
    assert.ok(prompt.tokens.length <= budget.maxTokens, `${prompt.tokens.length} tokens`);
    assert.ok(prefix.endsWith(prompt.prefixText));
    assert.equal(prefix[prefix.length - prompt.prefixText.length - 1], '\n', 'the cut falls right after a newline');
    // The unused suffix share went to the prefix: it fills all but less than one line of the room.
    const room = budget.maxTokens - 3;
    assert.ok(
      room - prompt.prefixText.length < 'p line 499\n'.length + 1,
      `prefix ${prompt.prefixText.length} of ${room}`,
    );
  });

  it('starts the prefix at a multiple of prefixStartStep lines, so typing keeps the prompt head (KV reuse)', () => {
    const budget = { maxTokens: 256, suffixShare: 0.25, contextShare: 0, prefixStartStep: 8 };
    const document = numberedLines(500, 'p');
    const heads: string[] = [];
    // Typing a long new line one character at a time, then the next line.
    const typed = 'const total = items.reduce((sum, item) => sum + item.price, 0);\nconsole.log(total);';
    for (let n = 0; n <= typed.length; n++) {
      const prefix = `${document}\n${typed.slice(0, n)}`;
      const prompt = buildFimPrompt({ prefix, suffix: '', languageId: 'typescript', snippets: [] }, bytes, fim, budget);
      assert.ok(prompt.tokens.length <= budget.maxTokens);
      const firstLine = prefix.split('\n').length - prompt.prefixText.split('\n').length;
      assert.equal(firstLine % 8, 0, `starts at line ${firstLine}`);
      heads.push(prompt.prefixText.split('\n')[0]);
    }
    // Every line of growth would move an unaligned start; aligned, it moved at most twice here.
    const moves = heads.filter((head, i) => i > 0 && head !== heads[i - 1]).length;
    assert.ok(moves <= 2, `${moves} moves`);
    const unaligned = { ...budget, prefixStartStep: 1 };
    const unalignedHeads = Array.from(
      { length: typed.length + 1 },
      (_, n) =>
        buildFimPrompt(
          { prefix: `${document}\n${typed.slice(0, n)}`, suffix: '', languageId: 'typescript', snippets: [] },
          bytes,
          fim,
          unaligned,
        ).prefixText.split('\n')[0],
    );
    assert.ok(unalignedHeads.filter((head, i) => i > 0 && head !== unalignedHeads[i - 1]).length > moves);
  });

  it("puts the document's first lines first, so prompts at far-apart cursors share their head (KV reuse)", () => {
    const budget = { maxTokens: 512, suffixShare: 0.2, contextShare: 0.15, prefixStartStep: 8, anchorShare: 0.25 };
    const lines = numberedLines(400, 'p').split('\n');
    const snippet = { path: 'other.ts', text: 'p line 1 p line 2' };
    const promptAt = (line: number, options = budget) => {
      const input = {
        prefix: `${lines.slice(0, line).join('\n')}\n  const x = `,
        suffix: `;\n${lines.slice(line).join('\n')}`,
        languageId: 'typescript',
        snippets: [snippet],
      };
      return buildFimPrompt(input, bytes, fim, options);
    };
    const sharedHead = (a: Int32Array, b: Int32Array) => {
      let n = 0;
      while (n < a.length && n < b.length && a[n] === b[n]) n++;
      return n;
    };
    const prompts = [120, 250, 390].map((line) => promptAt(line));
    const anchorTokens = prompts[0].anchorText.length;
    assert.ok(anchorTokens > 0 && anchorTokens <= Math.floor((budget.maxTokens - 3) * budget.anchorShare));
    assert.ok(lines.join('\n').startsWith(prompts[0].anchorText), 'the anchor is the head of the document');
    for (const prompt of prompts) {
      assert.ok(prompt.tokens.length <= budget.maxTokens, `${prompt.tokens.length} tokens`);
      assert.equal(prompt.anchorText, prompts[0].anchorText);
      // The anchor, then the snippet, then the text near the cursor.
      const suffixAt = Array.from(prompt.tokens).indexOf(fim.suffix);
      const head = decode(prompt.tokens.subarray(1, suffixAt));
      assert.ok(head.startsWith(`${prompt.anchorText}// Path: other.ts\n`), head.slice(0, 80));
      assert.ok(head.endsWith(`${prompt.prefixText}`));
    }
    assert.ok(sharedHead(prompts[0].tokens, prompts[2].tokens) > anchorTokens);
    // Without an anchor, the same jumps share the marker, the snippet and a few characters.
    const plain = [120, 390].map((line) => promptAt(line, { ...budget, anchorShare: 0 }));
    assert.equal(plain[0].anchorText, '');
    const snippetTokens = plain[0].contextText.length;
    assert.ok(sharedHead(plain[0].tokens, plain[1].tokens) < 1 + snippetTokens + 'p line '.length + 1);
    // A prefix that fits whole is kept whole, with no anchor apart from it.
    const near = promptAt(3);
    assert.equal(near.anchorText, '');
    assert.equal(near.prefixText, `${lines.slice(0, 3).join('\n')}\n  const x = `);
  });

  it('gives a model past the int8 threshold half the prompt of the embedded model', () => {
    const shapes = path.join(__dirname, '..', '..', 'fixtures', 'model-shapes');
    const qwen = JSON.parse(fs.readFileSync(path.join(shapes, 'qwen2.5-coder-0.5b.json'), 'utf8'));
    const large = countParameters(parseModelConfig(qwen));
    const embedded = loadModelConfig(path.join(__dirname, '..', '..', '..', 'models'));
    assert.ok(large > AUTO_INT8_PARAMETERS && countParameters(embedded) < AUTO_INT8_PARAMETERS);
    assert.equal(promptTokensFor(large), defaultPromptBudget.maxTokens / 2);
    assert.equal(promptTokensFor(countParameters(embedded)), defaultPromptBudget.maxTokens);
    // The embedded model's context (512) bounds it more tightly still; a 32k one does not.
    assert.equal(promptTokenBudget(qwen.max_position_embeddings, 64, large), defaultPromptBudget.maxTokens / 2);
    assert.equal(promptTokenBudget(embedded.maxPositionEmbeddings, 64, countParameters(embedded)), 256);
  });

  it('keeps the head of a long suffix within its share', () => {
    const suffix = `;\n${numberedLines(300, 's')}`;
    const budget = { maxTokens: 400, suffixShare: 0.2, contextShare: 0 };
    const prompt = buildFimPrompt({ prefix: 'x = 1', suffix, languageId: 'python', snippets: [] }, bytes, fim, budget);
    assert.ok(suffix.startsWith(prompt.suffixText));
    assert.ok(prompt.suffixText.length <= Math.floor((budget.maxTokens - 3) * budget.suffixShare));
    assert.ok(prompt.suffixText.endsWith('\n'), 'cut at a line end');
    assert.ok(prompt.suffixText.length > 0);
  });

  it('writes snippets as comments of the document language and skips those that do not fit', () => {
    const [python] = formatSnippets([{ path: 'lib/util.py', text: 'def f():\n    return 1\n' }], 'python');
    assert.equal(python, '# Path: lib/util.py\n# def f():\n#     return 1\n');
    const small = { path: 'a.ts', text: 'export const a = 1;' };
    const huge = { path: 'b.ts', text: numberedLines(200, 'b') };
    const budget = { maxTokens: 512, suffixShare: 0.2, contextShare: 0.2 };
    const prompt = buildFimPrompt(
      { prefix: 'const b = ', suffix: '', languageId: 'typescript', snippets: [huge, small] },
      bytes,
      fim,
      budget,
    );
    assert.equal(prompt.contextText, '// Path: a.ts\n// export const a = 1;\n');
    const suffixAt = Array.from(prompt.tokens).indexOf(fim.suffix);
    assert.equal(decode(prompt.tokens.subarray(1, suffixAt)), `${prompt.contextText}const b = `);
  });

  it('takeTailLines and takeHeadLines return nothing for a zero budget and everything for a large one', () => {
    const text = 'a\nbb\nccc';
    assert.equal(takeTailLines(text, 0, bytes), '');
    assert.equal(takeHeadLines(text, 0, bytes), '');
    assert.equal(takeTailLines(text, 100, bytes), text);
    assert.equal(takeHeadLines(text, 100, bytes), text);
    assert.equal(takeTailLines(text, 'bb\nccc'.length, bytes), 'bb\nccc');
    assert.equal(takeHeadLines(text, 'a\nbb\n'.length, bytes), 'a\nbb\n');
  });
});
