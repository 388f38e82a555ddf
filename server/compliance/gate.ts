// Compliance mode in the server: every suggestion passes the repository's policy before it is
// shown, and every served, blocked or accepted suggestion is appended to the hash-chained audit
// log in the registry folder. Fails closed: no policy, or one that does not parse, blocks all.

import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readManifest } from '../../trainer/adapters/folder';
import { AUDIT_FILE, AuditLog } from '../../trainer/modes/compliance/audit';
import { checkSuggestion, type Verdict } from '../../trainer/modes/compliance/check';
import {
  isContextAllowed,
  loadPolicy,
  POLICY_FILE,
  policyPath,
  type Policy,
} from '../../trainer/modes/compliance/policy';
import { registryLocation } from '../../trainer/adapters/registry';
import type { AdapterSummary, Mode } from '../protocol';
import { oneLine } from '../model/adapters';

export interface ServedSuggestion {
  path: string;
  suggestion: string;
  verdicts: Verdict[];
  adapter: { id: string | null; sha256: string | null };
  policySha256: string;
}

export type GateAnswer = { allowed: true; id: string } | { allowed: false; reason: string };

/** Served suggestions remembered for their accept event (older ones are forgotten). */
const rememberedSuggestions = 200;

export class ComplianceGate {
  private readonly audit: AuditLog;
  private readonly served = new Map<string, ServedSuggestion>();
  private policyCache: { mtimeMs: number; size: number; policy: Policy | null; error: string | null } | null = null;

  constructor(readonly repoRoot: string) {
    this.audit = AuditLog.open(path.join(registryLocation(repoRoot), AUDIT_FILE));
  }

  get auditFile(): string {
    return this.audit.file;
  }

  /** The policy as the file is now (re-read when it changes); a parse error is returned as one line. */
  policy(): { policy: Policy | null; error: string | null } {
    const file = path.join(this.repoRoot, POLICY_FILE);
    let stat: fs.Stats | null = null;
    try {
      stat = fs.statSync(file);
    } catch {
      stat = null;
    }
    if (!stat)
      return {
        policy: null,
        error: `${POLICY_FILE} is missing at the repository root: compliance mode serves nothing without a policy`,
      };
    if (this.policyCache && this.policyCache.mtimeMs === stat.mtimeMs && this.policyCache.size === stat.size)
      return this.policyCache;
    let policy: Policy | null = null;
    let error: string | null = null;
    try {
      policy = loadPolicy(this.repoRoot);
    } catch (caught) {
      error = oneLine(caught);
    }
    this.policyCache = { mtimeMs: stat.mtimeMs, size: stat.size, policy, error };
    return this.policyCache;
  }

  /** Repository-relative path of a file ('/'), null outside the repository. */
  relativePath(file: string): string | null {
    return policyPath(this.repoRoot, file);
  }

  /** Whether another open file may be prompt context (never without a valid policy). */
  contextAllowed(file: string | null): boolean {
    const { policy } = this.policy();
    return policy !== null && file !== null && isContextAllowed(policy, this.relativePath(file));
  }

  /** Checks a suggestion, logs it as served or blocked, and gives the id of a served one. */
  async check(request: {
    file: string | null;
    text: string;
    fileText: string;
    offset: number;
    mode: Mode;
    adapter: AdapterSummary | null;
  }): Promise<GateAnswer> {
    const { policy, error } = this.policy();
    if (!policy) return { allowed: false, reason: error ?? 'no policy' };
    const relative = request.file === null ? null : this.relativePath(request.file);
    const result = checkSuggestion(policy, {
      path: relative,
      text: request.text,
      fileText: request.fileText,
      offset: request.offset,
    });
    const record: ServedSuggestion = {
      path: relative ?? request.file ?? '(untitled)',
      suggestion: request.text,
      verdicts: result.verdicts,
      adapter: adapterIdentity(request.adapter),
      policySha256: policy.sha256,
    };
    await this.audit.append({ event: result.allowed ? 'served' : 'blocked', mode: request.mode, ...record });
    if (!result.allowed) {
      const failed = result.verdicts
        .filter((verdict) => !verdict.passed)
        .map((verdict) => `${verdict.rule} (${verdict.violations.map((v) => v.message).join('; ')})`);
      return { allowed: false, reason: `blocked by ${POLICY_FILE}: ${failed.join(', ')}` };
    }
    const id = randomUUID();
    this.served.set(id, record);
    if (this.served.size > rememberedSuggestions) this.served.delete(this.served.keys().next().value!);
    return { allowed: true, id };
  }

  /** Logs the accept of a served suggestion; false for an id this server did not serve (or forgot). */
  async accepted(id: string, mode: Mode): Promise<boolean> {
    const record = this.served.get(id);
    if (!record) return false;
    this.served.delete(id);
    await this.audit.append({ event: 'accepted', mode, ...record });
    return true;
  }
}

/** The adapter's id and the sha256 of its weights (from its manifest); nulls for the base model. */
function adapterIdentity(adapter: AdapterSummary | null): { id: string | null; sha256: string | null } {
  if (!adapter) return { id: null, sha256: null };
  let sha256: string | null = null;
  try {
    sha256 = readManifest(adapter.path)?.weights.sha256 ?? null;
  } catch {
    sha256 = null;
  }
  return { id: adapter.id, sha256 };
}
