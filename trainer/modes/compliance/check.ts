// Every suggestion in compliance mode passes through checkSuggestion before it is shown; a
// suggestion with any failed verdict is blocked (never shown, only recorded in the audit log).
// Pure and synchronous: the regexes are compiled once by parsePolicy.

import { isContextAllowed, pathAllowed, type Policy, type PathRules } from './policy';

export type ComplianceRule = 'context-path' | 'max-length' | 'banned-pattern' | 'banned-api' | 'required-header';

export interface Violation {
  /** The policy entry that failed (a pattern, an API as written, or the rule name). */
  id: string;
  message: string;
}

export interface Verdict {
  rule: ComplianceRule;
  passed: boolean;
  violations: Violation[];
}

export interface SuggestionToCheck {
  /** The file's path relative to the repository root ('/'-separated); null when it is not in the repository. */
  path: string | null;
  /** The suggestion as it would be inserted. */
  text: string;
  /** The document as it is now, without the suggestion. */
  fileText: string;
  /** Where the suggestion would be inserted in fileText (UTF-16 offset). Default: the end. */
  offset?: number;
}

export interface ComplianceResult {
  allowed: boolean;
  verdicts: Verdict[];
}

/** Applies every rule of `policy` to one suggestion; `allowed` is false when any verdict failed. */
export function checkSuggestion(policy: Policy, suggestion: SuggestionToCheck): ComplianceResult {
  const { text, fileText } = suggestion;
  const offset = suggestion.offset ?? fileText.length;
  if (!(Number.isInteger(offset) && offset >= 0 && offset <= fileText.length)) {
    throw new Error(`checkSuggestion: offset ${offset} is outside the document (0..${fileText.length})`);
  }
  const verdicts: Verdict[] = [];
  const verdict = (rule: ComplianceRule, violations: Violation[]) =>
    verdicts.push({ rule, passed: violations.length === 0, violations });

  verdict(
    'context-path',
    isContextAllowed(policy, suggestion.path)
      ? []
      : [
          {
            id: 'paths.context',
            message:
              suggestion.path === null
                ? 'the file is not inside the repository'
                : `${suggestion.path} is not allowed as context by paths.context`,
          },
        ],
  );

  const limits = policy.maxSuggestionLength;
  if (limits.chars !== null || limits.lines !== null) {
    const violations: Violation[] = [];
    const chars = codePoints(text);
    const lines = lineCount(text);
    if (limits.chars !== null && chars > limits.chars)
      violations.push({
        id: 'maxSuggestionLength.chars',
        message: `${chars} characters exceed the limit of ${limits.chars}`,
      });
    if (limits.lines !== null && lines > limits.lines)
      violations.push({
        id: 'maxSuggestionLength.lines',
        message: `${lines} lines exceed the limit of ${limits.lines}`,
      });
    verdict('max-length', violations);
  }

  // Patterns and APIs are matched on the lines the suggestion touches (so a name split between
  // typed text and the suggestion is caught); only matches that overlap the suggestion count.
  if (policy.bannedPatterns.length > 0 || policy.bannedApis.length > 0) {
    const lineStart = fileText.lastIndexOf('\n', offset - 1) + 1;
    const after = fileText.indexOf('\n', offset);
    const lineEnd = after < 0 ? fileText.length : after;
    const region = fileText.slice(lineStart, offset) + text + fileText.slice(offset, lineEnd);
    const from = offset - lineStart;
    const to = from + text.length;
    if (policy.bannedPatterns.length > 0) {
      verdict(
        'banned-pattern',
        policy.bannedPatterns
          .filter((p) => overlaps(p.regex, region, from, to))
          .map((p) => ({ id: p.id, message: p.message })),
      );
    }
    if (policy.bannedApis.length > 0) {
      verdict(
        'banned-api',
        policy.bannedApis
          .filter((api) => overlaps(api.regex, region, from, to))
          .map((api) => ({ id: api.id, message: api.message })),
      );
    }
  }

  const header = policy.requiredHeader;
  if (header && appliesTo(header.paths, suggestion.path)) {
    verdict(
      'required-header',
      headerHolds(header, fileText, text, offset) ? [] : [{ id: 'requiredHeader', message: header.message }],
    );
  }

  return { allowed: verdicts.every((v) => v.passed), verdicts };
}

/** Does `regex` (global) match anywhere in `text` overlapping [from, to)? */
function overlaps(regex: RegExp, text: string, from: number, to: number): boolean {
  regex.lastIndex = 0;
  for (let match = regex.exec(text); match !== null; match = regex.exec(text)) {
    const start = match.index;
    const end = start + match[0].length;
    if (match[0].length === 0) {
      if (start >= from && start < to) return true;
      regex.lastIndex++;
    } else if (start < to && end > from) {
      return true;
    }
    if (start >= to) return false;
  }
  return false;
}

function appliesTo(rules: PathRules | null, relativePath: string | null): boolean {
  if (rules === null) return true;
  if (relativePath === null) return true; // outside the repository: the strictest reading
  try {
    return pathAllowed(rules, relativePath);
  } catch {
    return true;
  }
}

/**
 * The document with the suggestion inserted starts with the header (after a BOM and a #! line),
 * or is still being written towards it (the whole document is a prefix of a literal header).
 */
function headerHolds(
  header: NonNullable<Policy['requiredHeader']>,
  fileText: string,
  text: string,
  offset: number,
): boolean {
  // Only the start of the document matters; build at most `window` characters of it.
  const window = Math.max((header.text ?? '').length, 4096);
  const doc =
    offset >= window
      ? fileText.slice(0, window)
      : (fileText.slice(0, offset) + text + fileText.slice(offset, window)).slice(0, window);
  const whole = fileText.length + text.length <= window;
  let start = doc.replace(/\r\n?/g, '\n').replace(/^\uFEFF/, '');
  if (start.startsWith('#!')) {
    const newline = start.indexOf('\n');
    start = newline < 0 ? '' : start.slice(newline + 1);
  }
  if (header.text !== null) {
    if (start.startsWith(header.text)) return true;
    // Typing the header itself: the whole document so far is a prefix of it.
    return whole && header.text.startsWith(start);
  }
  return header.pattern!.test(start);
}

function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

/** Lines a suggestion spans: "a" 1, "a\nb" 2, "a\n" 1 (a trailing newline opens no new line of text). */
function lineCount(text: string): number {
  if (text.length === 0) return 0;
  let n = 1;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) n++;
  return text.endsWith('\n') ? n - 1 : n;
}
