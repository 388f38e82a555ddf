import { strict as assert } from 'node:assert';
import { buildFimPrompt, type PromptTokenizer } from '../../../server/completion/prompt';
import { continuedPrompt, MAX_CONTINUED_CHARS, type TypingAnchor } from '../../../server/completion/typing';
import type { FimTemplate } from '../../../trainer/model/tokenizer/fim';

// A byte-level tokenizer with no merges: one token per UTF-8 byte, so the appended tokens are known.
const bytes: PromptTokenizer = { encode: (text) => new TextEncoder().encode(text) };
const fim: FimTemplate = { family: 'qwen', prefix: 1001, suffix: 1002, middle: 1003, bos: null, end: null };

const prefix = 'function total(lines) {\n  return ';
const suffix = '\n}\n';

function anchor(): TypingAnchor {
  const prompt = buildFimPrompt({ prefix, suffix, languageId: 'typescript', snippets: [] }, bytes, fim);
  return { uri: 'file:///a.ts', modelKey: 'm', prefix, suffix, prompt };
}

describe('server/completion/typing', () => {
  it('appends the typed text after the middle marker and extends the prefix text', () => {
    const start = anchor();
    const continued = continuedPrompt(start, { ...start, prefix: `${prefix}lines.` }, bytes, 4096);
    assert.ok(continued);
    const typed = Array.from(bytes.encode('lines.'));
    assert.deepEqual(Array.from(continued.tokens), [...Array.from(start.prompt.tokens), ...typed]);
    assert.equal(start.prompt.tokens[start.prompt.tokens.length - 1], fim.middle);
    assert.equal(continued.prefixText, `${start.prompt.prefixText}lines.`);
    assert.equal(continued.suffixText, start.prompt.suffixText);
  });

  it('starts afresh on another document, model or suffix, a new line, a deletion, or too much text', () => {
    const start = anchor();
    const cases: Array<[string, Partial<TypingAnchor>]> = [
      ['another document', { uri: 'file:///b.ts', prefix: `${prefix}x` }],
      ['another model', { modelKey: 'n', prefix: `${prefix}x` }],
      ['a changed suffix', { prefix: `${prefix}x`, suffix: `;${suffix}` }],
      ['a new line', { prefix: `${prefix}x;\n  ` }],
      ['a deletion', { prefix: prefix.slice(0, -1) }],
      ['nothing typed', { prefix }],
      ['too much typed', { prefix: prefix + 'y'.repeat(MAX_CONTINUED_CHARS + 1) }],
    ];
    for (const [what, change] of cases) {
      assert.equal(continuedPrompt(start, { ...start, ...change }, bytes, 4096), null, what);
    }
    assert.equal(continuedPrompt(null, { ...start, prefix: `${prefix}x` }, bytes, 4096), null, 'no anchor');
  });

  it('starts afresh when the continued prompt would outgrow the budget', () => {
    const start = anchor();
    const fits = start.prompt.tokens.length + 3;
    assert.ok(continuedPrompt(start, { ...start, prefix: `${prefix}abc` }, bytes, fits));
    assert.equal(continuedPrompt(start, { ...start, prefix: `${prefix}abcd` }, bytes, fits), null);
  });
});
