import { strict as assert } from 'node:assert';
import { postprocessCompletion, stopSequencesFor } from '../../../server/completion/postprocess';

// `█` marks the cursor in `input`.
interface Case {
  description: string;
  input: string;
  modelOutput: string;
  expected: string;
  maxLines?: number;
}

const cases: Case[] = [
  {
    description: 'cuts at a control character, invalid UTF-8 (U+FFFD) or a bidi override',
    input: 'const total = █',
    modelOutput: 'items.length\u0001;',
    expected: 'items.length',
  },
  {
    description: 'cuts at U+FFFD',
    input: 'const total = █',
    modelOutput: 'sum(values) \ufffd\ufffd',
    expected: 'sum(values)',
  },
  {
    description: 'cuts at a bidi override (Trojan Source)',
    input: 'const access = █',
    modelOutput: '"user" \u202e && isAdmin',
    expected: '"user"',
  },
  {
    description: 'nothing printable left: no completion',
    input: 'const total = █',
    modelOutput: '\u0007items',
    expected: '',
  },
  {
    description: 'keeps a one-line completion as is',
    input: 'const total = █',
    modelOutput: 'items.length;',
    expected: 'items.length;',
  },
  {
    description: 'stops at a blank line',
    input: 'function add(a: number, b: number) {\n  █\n}\n',
    modelOutput: 'const sum = a + b;\n  return sum;\n\n  // unrelated\n  foo();',
    expected: 'const sum = a + b;\n  return sum;',
  },
  {
    description: 'stops where the block the cursor is in ends (dedent)',
    input: 'if (ready) {\n  █\n}\nnext();\n',
    modelOutput: 'start();\n}\nelse {\n  stop();',
    expected: 'start();',
  },
  {
    description: 'keeps the closing brace of a block the completion opens, then stops',
    input: 'function double(x: number) {█\n',
    modelOutput: '\n  return x * 2;\n}\nfunction triple(x: number) {\n  return x * 3;\n}',
    expected: '\n  return x * 2;\n}',
  },
  {
    description: 'drops the closing brace the editor already auto-closed on the cursor line',
    input: 'function double(x: number) {█}\n',
    modelOutput: '\n  return x * 2;\n}',
    expected: '\n  return x * 2;',
  },
  {
    description: 'removes an auto-closed parenthesis the suffix already holds',
    input: 'console.log(█)',
    modelOutput: 'value)',
    expected: 'value',
  },
  {
    description: 'removes the whole rest of the line when the completion repeats it',
    input: 'const name = █;\n',
    modelOutput: "user.name ?? 'anonymous';",
    expected: "user.name ?? 'anonymous'",
  },
  {
    description: 'does not cut a partial match of the rest of the line',
    input: 'const x = █ + c;\n',
    modelOutput: 'a + b',
    expected: 'a + b',
  },
  {
    description: 'stops before a line the suffix starts with',
    input: 'const a = 1;\n█\nconst c = 3;\n',
    modelOutput: 'const b = 2;\nconst c = 3;\nconst d = 4;',
    expected: 'const b = 2;',
  },
  {
    description: 'limits the number of lines',
    input: 'function f() {\n  █\n}',
    modelOutput: 'a();\n  b();\n  c();\n  d();',
    expected: 'a();\n  b();',
    maxLines: 2,
  },
  {
    description: 'cuts at a closing bracket that closes nothing in the prefix',
    input: 'let x = █\n',
    modelOutput: 'compute(1, 2));\nfoo();',
    expected: 'compute(1, 2)',
  },
  {
    description: 'ignores brackets inside strings',
    input: 'log(█)\n',
    modelOutput: '"a)b", 1)',
    expected: '"a)b", 1',
  },
  {
    description: 'a mismatched closer inside the completion ends it',
    input: 'const v = █\n',
    modelOutput: 'call(a, [b, c)];',
    expected: 'call(a, [b, c',
  },
  {
    description: 'python: a dedent ends the block',
    input: 'def area(r):\n    █\n',
    modelOutput: 'return 3.14 * r * r\n\ndef perimeter(r):\n    return 2 * 3.14 * r',
    expected: 'return 3.14 * r * r',
  },
  {
    description: 'whitespace-only output becomes nothing',
    input: 'x = █',
    modelOutput: '  \n\n ',
    expected: '',
  },
  {
    description: 'leading newline then content is kept (completion on the next line)',
    input: 'const items = [];█\n',
    modelOutput: '\nitems.push(1);',
    expected: '\nitems.push(1);',
  },
  {
    description: 'a decoding loop is cut after its first occurrence',
    input: 'const client = retry█',
    modelOutput: 'Server.server.server.server.serv',
    expected: 'Server.server.',
  },
  {
    description: 'a loop inside brackets is cut too (the bracket stays unbalanced, so it goes)',
    input: 'handle(█',
    modelOutput: 'response.response.response.resp',
    expected: 'response.',
  },
  {
    description: 'repeated numbers are data, not a loop',
    input: 'const zeros = █',
    modelOutput: '[0, 0, 0, 0];',
    expected: '[0, 0, 0, 0];',
  },
  {
    description: 'trailing whitespace is trimmed',
    input: 'let y = █',
    modelOutput: '42;   \n',
    expected: '42;',
  },
];

describe('server/completion/postprocess', () => {
  for (const testCase of cases) {
    it(testCase.description, () => {
      const cursor = testCase.input.indexOf('█');
      assert.ok(cursor >= 0, 'the input needs a cursor marker');
      const result = postprocessCompletion({
        prefix: testCase.input.slice(0, cursor),
        suffix: testCase.input.slice(cursor + 1),
        completion: testCase.modelOutput,
        maxLines: testCase.maxLines ?? 8,
      });
      assert.equal(result, testCase.expected);
    });
  }
});

describe('server/completion/postprocess: stop sequences for the decoder', () => {
  it('one line inside a line, a block at the start of a fresh line', () => {
    assert.deepEqual(stopSequencesFor('const total = ', ''), ['\n']);
    assert.deepEqual(stopSequencesFor('  foo(', ');\n'), ['\n']);
    assert.deepEqual(stopSequencesFor('function f() {\n  ', '\n}\n'), ['\n\n']);
    assert.deepEqual(stopSequencesFor('', ''), ['\n\n']);
  });
});
