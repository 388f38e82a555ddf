import * as path from 'node:path';
import type { Command } from 'commander';
import { AUDIT_FILE, AuditLog, verifyAuditLog, type AuditVerification } from '../../modes/compliance/audit';
import { POLICY_FILE, loadPolicy, type Policy } from '../../modes/compliance/policy';
import { findRepoRoot, registryLocation } from '../../adapters/registry';

// `idiom audit verify [--log PATH]`: checks the compliance audit log's hash chain (exit 1 naming
// the first broken entry). `idiom audit repair [--reason TEXT]`: lets writers append again after
// tampering or a torn write, recording what was found as an entry in the chain.
// `idiom audit policy [--repo DIR]`: validates idiom-policy.json.

interface AuditOptions {
  log?: string;
  reason?: string;
  repo?: string;
  registry?: string;
  json?: boolean;
}

/** The log the language server writes for a repository: <registry>/audit.jsonl (default .idiom/). */
export function defaultAuditLogPath(repoRoot: string, registry?: string): string {
  return path.join(registryLocation(repoRoot, registry ? { location: registry } : {}), AUDIT_FILE);
}

export function registerAuditCommand(program: Command): void {
  const audit = program.command('audit').description('the compliance audit log and policy');
  audit
    .command('verify')
    .description(
      'verify the audit log: every entry intact, in order, chained to the one before, nothing cut off the end',
    )
    .option('--log <file>', 'audit log (default: .idiom/audit.jsonl of the repository around the current folder)')
    .option('--repo <dir>', 'repository whose log to verify')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--json', 'print one JSON object on stdout')
    .action((options: AuditOptions) => {
      const result = verifyAuditLog(auditLogPath(options));
      if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
      else process.stdout.write(formatVerification(result));
      if (!result.ok) process.exitCode = 1;
    });
  audit
    .command('repair')
    .description(
      'after a refused append: cut a torn tail (kept beside the log) and record what was wrong as a repair entry in the chain',
    )
    .option('--log <file>', 'audit log (default: .idiom/audit.jsonl of the repository around the current folder)')
    .option('--repo <dir>', 'repository whose log to repair')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--reason <text>', 'why, in your words (kept in the entry)', 'repaired by hand')
    .option('--json', 'print one JSON object on stdout')
    .action(async (options: AuditOptions) => {
      const file = auditLogPath(options);
      const entry = await AuditLog.open(file).repair(options.reason ?? 'repaired by hand');
      if (options.json) process.stdout.write(`${JSON.stringify({ file, entry })}\n`);
      else
        process.stdout.write(
          `repaired: ${file}: entry ${entry.seq} records ${entry.repair.problems.length} problem(s)${entry.repair.cut ? `, ${entry.repair.cut.bytes} bytes cut (kept in ${entry.repair.cut.keptIn})` : ''}; first: ${entry.repair.problems[0]}\n`,
        );
    });
  audit
    .command('policy')
    .description(`validate the compliance policy (${POLICY_FILE} at the repository root)`)
    .option('--repo <dir>', 'repository (default: the one around the current folder)')
    .option('--file <file>', 'policy file to validate instead')
    .option('--json', 'print one JSON object on stdout')
    .action((options: AuditOptions & { file?: string }) => {
      const root = findRepoRoot(options.repo ?? process.cwd());
      const file = options.file ? path.resolve(options.file) : path.join(root, POLICY_FILE);
      const policy = loadPolicy(file);
      if (!policy) throw new Error(`${file}: no policy file`);
      const summary = policySummary(policy);
      if (options.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      else
        process.stdout.write(
          `${file}: valid (sha256 ${policy.sha256.slice(0, 12)}): ${summary.bannedPatterns} banned patterns, ${summary.bannedApis.length} banned APIs, header ${summary.requiredHeader ? 'required' : 'not required'}, training paths [${summary.paths.training.join(', ')}], context paths [${summary.paths.context.join(', ')}]\n`,
        );
    });
}

function auditLogPath(options: AuditOptions): string {
  return options.log
    ? path.resolve(options.log)
    : defaultAuditLogPath(findRepoRoot(options.repo ?? process.cwd()), options.registry);
}

export function policySummary(policy: Policy) {
  return {
    file: policy.source,
    sha256: policy.sha256,
    bannedPatterns: policy.bannedPatterns.length,
    bannedApis: policy.bannedApis.map((api) => api.id),
    requiredHeader: policy.requiredHeader !== null,
    paths: { training: policy.paths.training.patterns, context: policy.paths.context.patterns },
    maxSuggestionLength: policy.maxSuggestionLength,
  };
}

function formatVerification(result: AuditVerification): string {
  const lines = [result.ok ? `ok: ${result.message}` : `TAMPERED: ${result.message}`];
  for (const problem of result.problems.slice(1)) lines.push(`  also: ${problem}`);
  for (const warning of result.warnings) lines.push(`  warning: ${warning}`);
  return `${lines.join('\n')}\n`;
}
