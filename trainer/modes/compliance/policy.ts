// The compliance policy: `idiom-policy.json` at the repository root (committed and reviewed like
// code, unlike the git-excluded .idiom/ folder). It says which suggestions may be shown (banned
// patterns and APIs, a required file header, a maximum length), which files may be context for a
// suggestion, and which files the compliance adapter may be trained on. Validation names the
// field in one line; schemas/idiom-policy.schema.json is the same contract for the editor.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import ignore, { type Ignore } from 'ignore';

export const POLICY_FILE = 'idiom-policy.json';
export const POLICY_VERSION = 1;

export interface BannedPattern {
  id: string;
  regex: RegExp;
  message: string;
}

export interface BannedApi {
  id: string;
  /** Dotted identifier path as written in the policy, without "()". */
  name: string;
  /** Written as `name()`: only calls are banned, not references. */
  callOnly: boolean;
  regex: RegExp;
  message: string;
}

export interface RequiredHeader {
  text: string | null;
  /** Anchored at the start of the file. */
  pattern: RegExp | null;
  /** Files it applies to; null = every file. */
  paths: PathRules | null;
  message: string;
}

/**
 * gitignore-style globs (the `ignore` package) read as an allow-list: the last rule matching a path
 * decides, a `!` rule disallows. Unlike .gitignore, a `!` rule can carve a folder out of an allowed
 * one (`src/**`, `!src/vendor/**`): each rule is matched on its own, without git's "a child of an
 * excluded folder cannot be re-included" shortcut, which would make such carve-outs impossible.
 */
export interface PathRules {
  patterns: string[];
  rules: { negative: boolean; matcher: Ignore }[];
}

/** Does the allow-list admit this repository-relative, '/'-separated path? */
export function pathAllowed(rules: PathRules, relativePath: string): boolean {
  let allowed = false;
  for (const rule of rules.rules) if (rule.matcher.ignores(relativePath)) allowed = !rule.negative;
  return allowed;
}

export interface Policy {
  version: typeof POLICY_VERSION;
  /** Where it was read from (errors and audit). */
  source: string;
  /** sha256 of the policy file's bytes: which policy a verdict came from. */
  sha256: string;
  bannedPatterns: BannedPattern[];
  bannedApis: BannedApi[];
  requiredHeader: RequiredHeader | null;
  paths: { training: PathRules; context: PathRules };
  maxSuggestionLength: { chars: number | null; lines: number | null };
}

export const POLICY_FIELDS = [
  '$schema',
  'version',
  'bannedPatterns',
  'bannedApis',
  'requiredHeader',
  'paths',
  'maxSuggestionLength',
];
const IDENTIFIER = /^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$/;

class PolicyError extends Error {}

/** Reads and validates `<repoRoot>/idiom-policy.json` (or the file `file`); null when there is none. */
export function loadPolicy(repoRootOrFile: string): Policy | null {
  const file =
    fs.existsSync(repoRootOrFile) && fs.statSync(repoRootOrFile).isDirectory()
      ? path.join(repoRootOrFile, POLICY_FILE)
      : repoRootOrFile;
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file}: cannot read the policy (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${file}: the policy is not valid UTF-8`);
  }
  return parsePolicy(text, file, sha256Hex(bytes));
}

/** Validates policy JSON text; one line naming the file and the field otherwise. */
export function parsePolicy(text: string, source = POLICY_FILE, sha256 = sha256Hex(text)): Policy {
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new Error(`${source}: invalid JSON (${(error as Error).message})`);
  }
  try {
    return validate(json, source, sha256);
  } catch (error) {
    if (error instanceof PolicyError) throw new Error(`${source}: ${error.message}`);
    throw error;
  }
}

function fail(field: string, problem: string): never {
  throw new PolicyError(`${field}: ${problem}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function checkKeys(value: Record<string, unknown>, field: string, allowed: string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key))
      fail(
        field === '' ? key : `${field}.${key}`,
        `unknown field (expected one of ${allowed.filter((k) => k !== '$schema').join(', ')})`,
      );
  }
}

function optionalString(value: unknown, field: string): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string') fail(field, `must be a string, got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : JSON.stringify(value);
}

function compileRegex(pattern: string, flags: string, field: string, anchored = false): RegExp {
  if (pattern.length === 0) fail(field, 'must not be empty');
  try {
    return new RegExp(anchored ? `^(?:${pattern})` : pattern, flags);
  } catch (error) {
    return fail(
      field,
      `invalid regular expression (${(error as Error).message.replace(/^Invalid regular expression: /, '')})`,
    );
  }
}

function pathRules(value: unknown, field: string): PathRules {
  if (!Array.isArray(value)) fail(field, `must be a list of gitignore-style globs, got ${describe(value)}`);
  const patterns: string[] = [];
  value.forEach((pattern, i) => {
    if (typeof pattern !== 'string' || pattern.trim() === '') fail(`${field}[${i}]`, 'must be a non-empty glob string');
    patterns.push(pattern);
  });
  const rules = patterns.map((pattern, i) => {
    const negative = pattern.startsWith('!');
    try {
      return { negative, matcher: ignore().add(negative ? pattern.slice(1) : pattern) };
    } catch (error) {
      return fail(`${field}[${i}]`, `invalid glob (${(error as Error).message})`);
    }
  });
  return { patterns, rules };
}

function positiveIntegerOrNull(value: unknown, field: string): number | null {
  if (value === undefined) return null;
  if (!(typeof value === 'number' && Number.isInteger(value) && value > 0))
    fail(field, `must be a positive integer, got ${describe(value)}`);
  return value;
}

function validate(json: unknown, source: string, sha256: string): Policy {
  if (!isObject(json)) fail('(top level)', `must be a JSON object, got ${describe(json)}`);
  checkKeys(json, '', POLICY_FIELDS);
  if (json.version === undefined) fail('version', `missing (write "version": ${POLICY_VERSION})`);
  if (json.version !== POLICY_VERSION)
    fail('version', `is ${describe(json.version)}; this Idiom reads policy version ${POLICY_VERSION}`);

  const bannedPatterns: BannedPattern[] = [];
  if (json.bannedPatterns !== undefined) {
    if (!Array.isArray(json.bannedPatterns))
      fail('bannedPatterns', `must be a list, got ${describe(json.bannedPatterns)}`);
    json.bannedPatterns.forEach((entry, i) => {
      const field = `bannedPatterns[${i}]`;
      const raw = typeof entry === 'string' ? { pattern: entry } : entry;
      if (!isObject(raw))
        fail(
          field,
          `must be a regular expression string or {"pattern", "flags", "message", "id"}, got ${describe(entry)}`,
        );
      checkKeys(raw, field, ['pattern', 'flags', 'message', 'id']);
      if (typeof raw.pattern !== 'string')
        fail(
          `${field}.pattern`,
          raw.pattern === undefined ? 'missing' : `must be a string, got ${describe(raw.pattern)}`,
        );
      const flags = optionalString(raw.flags, `${field}.flags`) ?? '';
      if (!/^[imsu]*$/.test(flags) || new Set(flags).size !== flags.length)
        fail(`${field}.flags`, `"${flags}": only i, m, s and u, each once (g and y make a pattern stateful)`);
      const regex = compileRegex(raw.pattern, `${flags}g`, `${field}.pattern`); // global: checkSuggestion walks every match
      const id = optionalString(raw.id, `${field}.id`) ?? raw.pattern;
      const message =
        optionalString(raw.message, `${field}.message`) ?? `matches banned pattern /${raw.pattern}/${flags}`;
      bannedPatterns.push({ id, regex, message });
    });
  }

  const bannedApis: BannedApi[] = [];
  if (json.bannedApis !== undefined) {
    if (!Array.isArray(json.bannedApis)) fail('bannedApis', `must be a list, got ${describe(json.bannedApis)}`);
    json.bannedApis.forEach((entry, i) => {
      const field = `bannedApis[${i}]`;
      const raw = typeof entry === 'string' ? { name: entry } : entry;
      if (!isObject(raw))
        fail(
          field,
          `must be an identifier string ("eval", "child_process.exec()") or {"name", "message"}, got ${describe(entry)}`,
        );
      checkKeys(raw, field, ['name', 'message']);
      if (typeof raw.name !== 'string')
        fail(`${field}.name`, raw.name === undefined ? 'missing' : `must be a string, got ${describe(raw.name)}`);
      const written = raw.name.trim();
      const callOnly = written.endsWith('()');
      const name = callOnly ? written.slice(0, -2).trim() : written;
      if (!IDENTIFIER.test(name))
        fail(
          `${field}.name`,
          `"${raw.name}" is not an identifier or dotted path (e.g. "eval", "Math.random", "child_process.exec()")`,
        );
      const message = optionalString(raw.message, `${field}.message`) ?? `uses banned API ${written}`;
      bannedApis.push({ id: written, name, callOnly, regex: apiRegex(name, callOnly), message });
    });
  }

  let requiredHeader: RequiredHeader | null = null;
  if (json.requiredHeader !== undefined) {
    const raw = typeof json.requiredHeader === 'string' ? { text: json.requiredHeader } : json.requiredHeader;
    if (!isObject(raw))
      fail(
        'requiredHeader',
        `must be a string or {"text" | "pattern", "paths", "message"}, got ${describe(json.requiredHeader)}`,
      );
    checkKeys(raw, 'requiredHeader', ['text', 'pattern', 'paths', 'message']);
    const headerText = optionalString(raw.text, 'requiredHeader.text');
    const pattern = optionalString(raw.pattern, 'requiredHeader.pattern');
    if ((headerText === null) === (pattern === null))
      fail(
        'requiredHeader',
        'give exactly one of "text" (literal) or "pattern" (regular expression anchored at the start of the file)',
      );
    if (headerText !== null && headerText.trim() === '') fail('requiredHeader.text', 'must not be empty');
    requiredHeader = {
      text: headerText === null ? null : headerText.replace(/\r\n?/g, '\n'),
      pattern: pattern === null ? null : compileRegex(pattern, '', 'requiredHeader.pattern', true),
      paths: raw.paths === undefined ? null : pathRules(raw.paths, 'requiredHeader.paths'),
      message:
        optionalString(raw.message, 'requiredHeader.message') ?? 'the file does not start with the required header',
    };
  }

  if (json.paths === undefined)
    fail(
      'paths',
      'missing: {"training": [globs], "context": [globs]} says which files may train the compliance adapter and be context for a suggestion',
    );
  if (!isObject(json.paths)) fail('paths', `must be an object, got ${describe(json.paths)}`);
  checkKeys(json.paths, 'paths', ['training', 'context']);
  if (json.paths.training === undefined)
    fail('paths.training', 'missing (globs of the files the compliance adapter may be trained on)');
  const training = pathRules(json.paths.training, 'paths.training');
  const context = json.paths.context === undefined ? training : pathRules(json.paths.context, 'paths.context');

  let maxSuggestionLength: Policy['maxSuggestionLength'] = { chars: null, lines: null };
  if (json.maxSuggestionLength !== undefined) {
    const raw =
      typeof json.maxSuggestionLength === 'number' ? { chars: json.maxSuggestionLength } : json.maxSuggestionLength;
    if (!isObject(raw))
      fail(
        'maxSuggestionLength',
        `must be a number of characters or {"chars", "lines"}, got ${describe(json.maxSuggestionLength)}`,
      );
    checkKeys(raw, 'maxSuggestionLength', ['chars', 'lines']);
    maxSuggestionLength = {
      chars: positiveIntegerOrNull(raw.chars, 'maxSuggestionLength.chars'),
      lines: positiveIntegerOrNull(raw.lines, 'maxSuggestionLength.lines'),
    };
    if (maxSuggestionLength.chars === null && maxSuggestionLength.lines === null)
      fail('maxSuggestionLength', 'give "chars", "lines" or both');
  }

  return {
    version: POLICY_VERSION,
    source,
    sha256,
    bannedPatterns,
    bannedApis,
    requiredHeader,
    paths: { training, context },
    maxSuggestionLength,
  };
}

/** `a.b.c` as a member path (optional chaining and spaces allowed), not part of a longer name. */
function apiRegex(name: string, callOnly: boolean): RegExp {
  const escapeDollar = (s: string) => s.replace(/[$]/g, '\\$');
  const body = name.split('.').map(escapeDollar).join('\\s*\\??\\.\\s*');
  return new RegExp(`(?<![\\w$.])${body}(?![\\w$])${callOnly ? '(?=\\s*(?:\\?\\.\\s*)?\\()' : ''}`, 'g');
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * A path as the policy's globs see it: relative to the repository root, '/'-separated. Null for a
 * path outside the repository (never allowed).
 */
export function policyPath(repoRoot: string, file: string): string | null {
  const relative = path.relative(path.resolve(repoRoot), path.resolve(repoRoot, file));
  if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) return null;
  return relative.split(path.sep).join('/');
}

function matches(rules: PathRules, relativePath: string | null): boolean {
  if (relativePath === null || relativePath === '') return false;
  const normalized = relativePath.replace(/\\/g, '/').replace(/^\.\//, '');
  if (normalized.startsWith('/') || normalized.startsWith('../')) return false;
  try {
    return pathAllowed(rules, normalized);
  } catch {
    return false; // a path the ignore package cannot test: fail closed
  }
}

/** May this repository-relative path be training data for the compliance adapter? */
export function isTrainingAllowed(policy: Policy, relativePath: string | null): boolean {
  return matches(policy.paths.training, relativePath);
}

/** May this file be context for a suggestion (the file being completed, or a snippet in the prompt)? */
export function isContextAllowed(policy: Policy, relativePath: string | null): boolean {
  return matches(policy.paths.context, relativePath);
}

/**
 * The compliance training filter: for `idiom train --mode compliance`, keep a mined file only when
 * this returns true for its repository-relative path.
 */
export function trainingPathFilter(policy: Policy): (relativePath: string) => boolean {
  return (relativePath) => isTrainingAllowed(policy, relativePath);
}
