import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  checkSuggestion,
  type ComplianceResult,
  type SuggestionToCheck,
} from '../../../trainer/modes/compliance/check';
import {
  POLICY_FIELDS,
  isContextAllowed,
  isTrainingAllowed,
  loadPolicy,
  parsePolicy,
  policyPath,
  trainingPathFilter,
  type Policy,
} from '../../../trainer/modes/compliance/policy';

// Each policy rule on its own (a suggestion that breaks only that rule is blocked, one that keeps
// it passes), and validation errors that name the field.

const BASE = { version: 1, paths: { training: ['src/**', '!src/vendor/**'], context: ['src/**', 'lib/**'] } };

function policyOf(extra: Record<string, unknown>): Policy {
  return parsePolicy(JSON.stringify({ ...BASE, ...extra }), 'idiom-policy.json');
}

function failed(result: ComplianceResult): string[] {
  return result.verdicts.filter((v) => !v.passed).flatMap((v) => v.violations.map((x) => `${v.rule}:${x.id}`));
}

const at = (fileText: string, marker = '|'): Pick<SuggestionToCheck, 'fileText' | 'offset'> => ({
  fileText: fileText.replace(marker, ''),
  offset: fileText.indexOf(marker),
});

describe('compliance policy: validation', () => {
  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"version": 1,', /idiom-policy\.json: invalid JSON/],
    ['missing version', { paths: BASE.paths }, /version: missing/],
    ['wrong version', { ...BASE, version: 2 }, /version: is 2; this Idiom reads policy version 1/],
    ['unknown top-level field', { ...BASE, bannedPattern: [] }, /bannedPattern: unknown field/],
    [
      'invalid regex',
      { ...BASE, bannedPatterns: ['ok', { pattern: '(unclosed' }] },
      /bannedPatterns\[1\]\.pattern: invalid regular expression/,
    ],
    [
      'stateful regex flag',
      { ...BASE, bannedPatterns: [{ pattern: 'x', flags: 'g' }] },
      /bannedPatterns\[0\]\.flags: "g": only i, m, s and u/,
    ],
    [
      'pattern not a string',
      { ...BASE, bannedPatterns: [{ pattern: 3 }] },
      /bannedPatterns\[0\]\.pattern: must be a string, got 3/,
    ],
    [
      'API not an identifier',
      { ...BASE, bannedApis: ['eval', 'child process.exec'] },
      /bannedApis\[1\]\.name: "child process\.exec" is not an identifier/,
    ],
    [
      'header with both text and pattern',
      { ...BASE, requiredHeader: { text: '// a', pattern: '//' } },
      /requiredHeader: give exactly one of "text"/,
    ],
    [
      'header pattern invalid',
      { ...BASE, requiredHeader: { pattern: '[' } },
      /requiredHeader\.pattern: invalid regular expression/,
    ],
    ['missing paths', { version: 1 }, /paths: missing/],
    ['missing training paths', { version: 1, paths: { context: ['src/**'] } }, /paths\.training: missing/],
    [
      'glob not a string',
      { version: 1, paths: { training: ['src/**', 7] } },
      /paths\.training\[1\]: must be a non-empty glob string/,
    ],
    [
      'length not positive',
      { ...BASE, maxSuggestionLength: { chars: 0 } },
      /maxSuggestionLength\.chars: must be a positive integer, got 0/,
    ],
    [
      'length with no limit',
      { ...BASE, maxSuggestionLength: {} },
      /maxSuggestionLength: give "chars", "lines" or both/,
    ],
    ['top level not an object', [1, 2], /\(top level\): must be a JSON object, got a list/],
  ];
  for (const [name, json, message] of bad) {
    it(`rejects ${name} with one line naming the field`, () => {
      assert.throws(
        () => parsePolicy(typeof json === 'string' ? json : JSON.stringify(json), 'idiom-policy.json'),
        (error: Error) => {
          assert.match(error.message, message);
          assert.ok(!error.message.includes('\n'), error.message);
          return true;
        },
      );
    });
  }

  it('loads from the repository root, hashes the file, accepts $schema, and reports a missing policy as null', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-policy-'));
    try {
      assert.equal(loadPolicy(root), null);
      const text = JSON.stringify({ $schema: './schemas/idiom-policy.schema.json', ...BASE, bannedApis: ['eval'] });
      fs.writeFileSync(path.join(root, 'idiom-policy.json'), text);
      const policy = loadPolicy(root)!;
      assert.equal(policy.bannedApis[0].name, 'eval');
      assert.match(policy.sha256, /^[0-9a-f]{64}$/);
      fs.writeFileSync(path.join(root, 'idiom-policy.json'), Buffer.from([0x7b, 0xff, 0x7d]));
      assert.throws(() => loadPolicy(root), /not valid UTF-8/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('compliance policy: rules', () => {
  it('banned pattern: blocks a suggestion matching it, case flags honoured, passes others', () => {
    const policy = policyOf({
      bannedPatterns: [
        { id: 'todo', pattern: 'TODO|FIXME', flags: 'i', message: 'no TODOs in served code' },
        'password\\s*=\\s*"',
      ],
    });
    const blocked = checkSuggestion(policy, { path: 'src/a.ts', text: '  // todo: later\n', fileText: '' });
    assert.equal(blocked.allowed, false);
    assert.deepEqual(failed(blocked), ['banned-pattern:todo']);
    assert.equal(
      blocked.verdicts.find((v) => v.rule === 'banned-pattern')!.violations[0].message,
      'no TODOs in served code',
    );
    assert.deepEqual(
      failed(checkSuggestion(policy, { path: 'src/a.ts', text: 'const password = "x";', fileText: '' })),
      ['banned-pattern:password\\s*=\\s*"'],
    );
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'const total = a + b;', fileText: '' }).allowed,
      true,
    );
  });

  it('banned pattern: a match split between typed text and the suggestion counts; one only in the existing text does not', () => {
    const policy = policyOf({ bannedPatterns: ['password\\s*='] });
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'word = "x";', ...at('const pass|\n') }).allowed,
      false,
    );
    // The line already held a match before the cursor; the suggestion adds nothing banned.
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: ' + 1;', ...at('password = 1|\nnext();\n') }).allowed,
      true,
    );
  });

  it('banned API: identifiers, dotted paths with optional chaining, call-only entries, no false hits in longer names', () => {
    const policy = policyOf({
      bannedApis: ['eval', { name: 'child_process.exec', message: 'use execFile' }, 'Math.random()'],
    });
    const check = (text: string) => failed(checkSuggestion(policy, { path: 'src/a.ts', text, fileText: '' }));
    assert.deepEqual(check('const f = eval;'), ['banned-api:eval']);
    assert.deepEqual(check('eval("1 + 1")'), ['banned-api:eval']);
    assert.deepEqual(check('child_process . exec(cmd)'), ['banned-api:child_process.exec']);
    assert.deepEqual(check('child_process?.exec(cmd)'), ['banned-api:child_process.exec']);
    assert.deepEqual(check('const r = Math.random();'), ['banned-api:Math.random()']);
    assert.deepEqual(check('const r = Math.random;'), [], 'call-only: a reference is fine');
    assert.deepEqual(check('evaluate(x); retrieval(); obj.eval(1); child_process.execFile(c); myMath.random()'), []);
    assert.deepEqual(check('const x = 1;'), []);
  });

  it('required header (literal): blocks a suggestion in a file without it or that pushes it down; allows writing it and code after it', () => {
    const header = '// Copyright (c) Acme Corp.\n';
    const policy = policyOf({ requiredHeader: { text: header, paths: ['src/**/*.ts'] } });
    const withHeader = `${header}export const a = 1;\n|`;
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'export const b = 2;\n', ...at(withHeader) }).allowed,
      true,
    );
    assert.deepEqual(
      failed(
        checkSuggestion(policy, { path: 'src/a.ts', text: 'export const b = 2;\n', ...at('export const a = 1;\n|') }),
      ),
      ['required-header:requiredHeader'],
    );
    assert.deepEqual(failed(checkSuggestion(policy, { path: 'src/a.ts', text: 'import x;\n', ...at(`|${header}`) })), [
      'required-header:requiredHeader',
    ]);
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'right (c) Acme', ...at('// Copy|') }).allowed,
      true,
      'typing the header',
    );
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'import x;', fileText: '' }).allowed,
      false,
      'an empty file',
    );
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: '\n', ...at(`#!/usr/bin/env node\n${header}|`) }).allowed,
      true,
      'after a #! line',
    );
    assert.equal(
      checkSuggestion(policy, { path: 'src/readme.md', text: 'text', fileText: '' }).allowed,
      true,
      'only the header paths',
    );
  });

  it('required header (pattern): anchored at the start of the file', () => {
    const policy = policyOf({ requiredHeader: { pattern: '// SPDX-License-Identifier: [A-Za-z0-9.-]+\\n' } });
    assert.equal(
      checkSuggestion(policy, { path: 'src/a.ts', text: 'x();', ...at('// SPDX-License-Identifier: MIT\n|') }).allowed,
      true,
    );
    assert.equal(
      checkSuggestion(policy, {
        path: 'src/a.ts',
        text: 'x();',
        ...at('const a = 1; // SPDX-License-Identifier: MIT\n|'),
      }).allowed,
      false,
    );
  });

  it('context paths: the completed file must be allowed as context (gitignore-style globs, negation, outside the repo)', () => {
    const policy = policyOf({ paths: { training: ['src/**'], context: ['src/**', '!src/secret/**', '*.md'] } });
    assert.equal(checkSuggestion(policy, { path: 'src/a.ts', text: 'x', fileText: '' }).allowed, true);
    assert.deepEqual(failed(checkSuggestion(policy, { path: 'src/secret/key.ts', text: 'x', fileText: '' })), [
      'context-path:paths.context',
    ]);
    assert.deepEqual(failed(checkSuggestion(policy, { path: 'test/a.ts', text: 'x', fileText: '' })), [
      'context-path:paths.context',
    ]);
    assert.deepEqual(failed(checkSuggestion(policy, { path: null, text: 'x', fileText: '' })), [
      'context-path:paths.context',
    ]);
    assert.equal(isContextAllowed(policy, 'docs/guide.md'), true);
    assert.equal(isContextAllowed(policy, '../other/src/a.ts'), false);
    assert.equal(policyPath('/repo', '/repo/src/a.ts'), 'src/a.ts');
    assert.equal(policyPath('/repo', '/elsewhere/a.ts'), null);
  });

  it('training paths: the compliance training filter keeps only allowed files; context defaults to the training globs', () => {
    const policy = policyOf({ paths: { training: ['src/**', '!src/vendor/**', '!**/*.test.ts'] } });
    const keep = trainingPathFilter(policy);
    assert.deepEqual(['src/a.ts', 'src/vendor/lib.ts', 'src/b.test.ts', 'scripts/x.ts', 'src/deep/c.py'].filter(keep), [
      'src/a.ts',
      'src/deep/c.py',
    ]);
    assert.equal(isTrainingAllowed(policy, null), false);
    assert.equal(isContextAllowed(policy, 'src/a.ts'), true);
    assert.equal(isContextAllowed(policy, 'scripts/x.ts'), false);
  });

  it('maximum suggestion length: characters (code points) and lines', () => {
    const policy = policyOf({ maxSuggestionLength: { chars: 20, lines: 2 } });
    const check = (text: string) => failed(checkSuggestion(policy, { path: 'src/a.ts', text, fileText: '' }));
    assert.deepEqual(check('a'.repeat(20)), []);
    assert.deepEqual(check('😀'.repeat(20)), [], 'astral characters count once');
    assert.deepEqual(check('a'.repeat(21)), ['max-length:maxSuggestionLength.chars']);
    assert.deepEqual(check('a\nb\n'), []);
    assert.deepEqual(check('a\nb\nc'), ['max-length:maxSuggestionLength.lines']);
    assert.deepEqual(
      failed(checkSuggestion(policyOf({ maxSuggestionLength: 5 }), { path: 'src/a.ts', text: 'abcdef', fileText: '' })),
      ['max-length:maxSuggestionLength.chars'],
    );
  });

  it('reports a verdict per rule, and several failures at once', () => {
    const policy = policyOf({
      bannedApis: ['eval'],
      bannedPatterns: ['secret'],
      maxSuggestionLength: { chars: 10 },
      requiredHeader: '// H\n',
    });
    const result = checkSuggestion(policy, { path: 'lib/x.ts', text: 'eval(secret) + more text', ...at('// H\n|') });
    assert.deepEqual(
      result.verdicts.map((v) => v.rule),
      ['context-path', 'max-length', 'banned-pattern', 'banned-api', 'required-header'],
    );
    assert.deepEqual(failed(result), [
      'max-length:maxSuggestionLength.chars',
      'banned-pattern:secret',
      'banned-api:eval',
    ]);
    assert.throws(
      () => checkSuggestion(policy, { path: 'lib/x.ts', text: 'a', fileText: 'ab', offset: 3 }),
      /offset 3 is outside the document/,
    );
  });
});

describe('compliance policy: the JSON schema contributed to VS Code', () => {
  const root = path.join(__dirname, '..', '..', '..');
  it('package.json contributes it for idiom-policy.json, and it names the fields the validator reads', () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      contributes: { jsonValidation: { fileMatch: string; url: string }[] };
    };
    const entry = manifest.contributes.jsonValidation.find((e) => e.fileMatch === 'idiom-policy.json');
    assert.ok(entry, 'jsonValidation entry for idiom-policy.json');
    const schema = JSON.parse(fs.readFileSync(path.join(root, entry.url), 'utf8')) as {
      properties: Record<string, unknown>;
      required: string[];
      additionalProperties: boolean;
    };
    assert.deepEqual(Object.keys(schema.properties).sort(), [...POLICY_FIELDS].sort());
    assert.deepEqual(schema.required.sort(), ['paths', 'version']);
    assert.equal(schema.additionalProperties, false);
  });
});
