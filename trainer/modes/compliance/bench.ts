// Per-suggestion overhead of compliance mode, as JSON on stdout:
//   npx tsx trainer/modes/compliance/bench.ts [--iterations N]
// checkSuggestion on a realistic policy (12 banned patterns, 10 banned APIs, a required header,
// path allow-lists, a length limit) and a 20 KB document, and one audit-log append (fsync'd and
// not). Times are medians over batches (shared machines are noisy).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AuditLog } from './audit';
import { checkSuggestion, type SuggestionToCheck } from './check';
import { parsePolicy } from './policy';
import { round } from '../../util/round';

const POLICY = {
  version: 1,
  bannedPatterns: [
    { pattern: 'TODO|FIXME|XXX', flags: 'i' },
    'password\\s*[:=]',
    'api[_-]?key\\s*[:=]',
    'BEGIN (RSA|EC|OPENSSH) PRIVATE KEY',
    'http://(?!localhost)',
    'console\\.log\\(',
    'debugger;',
    '@ts-ignore',
    'eslint-disable',
    'AKIA[0-9A-Z]{16}',
    'innerHTML\\s*=',
    'SELECT .* FROM .* WHERE .*\\+',
  ],
  bannedApis: [
    'eval',
    'Function()',
    'child_process.exec',
    'child_process.execSync',
    'Math.random()',
    'document.write',
    'setTimeout()',
    'vm.runInNewContext',
    'crypto.createCipher',
    'fs.rmSync',
  ],
  requiredHeader: { text: '// Copyright (c) Acme Corp. All rights reserved.\n', paths: ['src/**/*.ts'] },
  paths: { training: ['src/**', '!src/vendor/**', '!**/*.test.ts'], context: ['src/**', 'lib/**', '!src/secret/**'] },
  maxSuggestionLength: { chars: 800, lines: 12 },
};

function document(): string {
  const parts = ['// Copyright (c) Acme Corp. All rights reserved.\n', "import { Repository } from './core';\n\n"];
  for (let i = 0; parts.join('').length < 20_000; i++) {
    parts.push(
      `export function handle${i}(repo: Repository, id: string): number {\n  const item = repo.get(id);\n  if (item === undefined) throw new Error(\`missing \${id}\`);\n  return item.value * ${i};\n}\n\n`,
    );
  }
  return parts.join('');
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function timeBatches(iterations: number, batches: number, fn: (i: number) => void): number {
  const perCall: number[] = [];
  for (let b = 0; b < batches; b++) {
    const start = performance.now();
    for (let i = 0; i < iterations; i++) fn(i);
    perCall.push(((performance.now() - start) * 1000) / iterations);
  }
  return median(perCall);
}

async function main(): Promise<void> {
  const argIndex = process.argv.indexOf('--iterations');
  const iterations = argIndex > 0 ? Number(process.argv[argIndex + 1]) : 2000;
  const policy = parsePolicy(JSON.stringify(POLICY));
  const fileText = document();
  const offset = fileText.indexOf('\n', Math.floor(fileText.length / 2)) + 1;
  const suggestions = [
    '  const total = items.reduce((sum, item) => sum + item.value, 0);\n',
    'export function findById(repo: Repository, id: string): Item {\n  const item = repo.get(id);\n  if (item === undefined) throw new NotFoundError(id);\n  return item;\n}\n',
    Array.from({ length: 8 }, (_, i) => `  const v${i} = compute(${i}, options.scale);\n`).join(''),
  ];
  const inputs: SuggestionToCheck[] = suggestions.map((text) => ({
    path: 'src/handlers/items.ts',
    text,
    fileText,
    offset,
  }));
  let allowed = 0;
  for (const input of inputs) if (checkSuggestion(policy, input).allowed) allowed++;
  const checkMicros = inputs.map((input) => timeBatches(iterations, 7, () => checkSuggestion(policy, input)));
  const blocked = { path: 'src/handlers/items.ts', text: '  eval(userInput); // TODO remove\n', fileText, offset };

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-audit-bench-'));
  try {
    const { verdicts } = checkSuggestion(policy, inputs[0]);
    const appendMicros = async (durable: boolean, n: number) => {
      const log = AuditLog.open(path.join(dir, `audit-${durable}.jsonl`), { durable });
      const record = {
        event: 'served' as const,
        mode: 'compliance' as const,
        adapter: { id: '20261128-130501-ab12cd', sha256: 'a'.repeat(64) },
        path: 'src/a.ts',
        suggestion: suggestions[0],
        verdicts,
        policySha256: policy.sha256,
      };
      const times: number[] = [];
      for (let i = 0; i < n; i++) {
        const start = performance.now();
        await log.append(record);
        times.push((performance.now() - start) * 1000);
      }
      return median(times);
    };
    const result = {
      checkSuggestion: {
        microsecondsMedian: {
          oneLine: round(checkMicros[0], 1),
          fiveLines: round(checkMicros[1], 1),
          eightLines: round(checkMicros[2], 1),
        },
        blockedMicroseconds: round(
          timeBatches(iterations, 7, () => checkSuggestion(policy, blocked)),
          1,
        ),
        allowedOfSamples: `${allowed}/${inputs.length}`,
        documentChars: fileText.length,
        policy: {
          bannedPatterns: policy.bannedPatterns.length,
          bannedApis: policy.bannedApis.length,
          requiredHeader: true,
          maxSuggestionLength: policy.maxSuggestionLength,
        },
        iterations,
      },
      auditAppend: {
        microsecondsMedianDurable: round(await appendMicros(true, 200), 1),
        microsecondsMedianNoFsync: round(await appendMicros(false, 200), 1),
      },
      node: process.version,
      cpus: os.cpus().length,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
