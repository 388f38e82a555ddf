// Content scanner for credentials. A hit never carries the matched text: only its kind and line,
// so reports and logs cannot leak what they found. The miner excludes a file with any hit.
// Three layers: vendor token formats (ours and secretlint's recommended rules), values that
// context names as credentials (assigned or passed near a credential-like name, connection
// strings, command lines), and the same checks again on string literals joined across `+` and
// on base64 runs decoded.

import { secretlintSpans } from './secretlint';

export type SecretKind =
  | 'private-key'
  | 'aws-access-key-id'
  | 'aws-secret-access-key'
  | 'github-token'
  | 'gitlab-token'
  | 'slack-token'
  | 'slack-webhook'
  | 'stripe-key'
  | 'google-api-key'
  | 'google-oauth-secret'
  | 'jwt'
  | 'npm-token'
  | 'openai-key'
  | 'anthropic-key'
  | 'huggingface-token'
  | 'sendgrid-key'
  | 'twilio-key'
  | 'shopify-token'
  | 'azure-storage-key'
  | 'url-credentials'
  | 'assigned-secret'
  | 'authorization-header'
  | 'connection-string-password'
  | 'command-line-password'
  | 'credential-literal'
  // A report of one of secretlint's recommended rules (`secretlint-aws`, `secretlint-basicauth`, …).
  | `secretlint-${string}`;

export interface SecretHit {
  kind: SecretKind;
  line: number; // 1-based
}

interface Pattern {
  kind: SecretKind;
  regex: RegExp;
  // Rejects look-alikes (placeholders, identifiers) after the regex matched.
  accept?: (match: RegExpExecArray) => boolean;
  // Skips the pattern on text without this (a cheap test before a costly regex).
  trigger?: RegExp;
}

// Shannon entropy in bits per character.
export function shannonEntropy(value: string): number {
  const counts = new Map<string, number>();
  for (const ch of value) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let entropy = 0;
  const n = value.length;
  for (const count of counts.values()) {
    const p = count / n;
    entropy -= p * Math.log2(p);
  }
  return entropy;
}

// Template and masking syntax, never a real value.
const PLACEHOLDER = /^(?:x+|X+|\*+|\.+|-+|_+|<[^>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|%[^%]*%|\$\w+)$/;
// Stand-in passwords seen in docs and tests (`postgres://user:password@localhost`).
const PLACEHOLDER_PASSWORD = /^(?:password|passwd|pass|pwd|secret|changeme|example|test|user|admin|root|guest)$/i;

// Share of the value's characters in word-like pieces (`Flow`, `password`, `token` in
// `FlowPasswordRequiredV2` or `token_sha256_to_refresh`): letters, 3 or more, with a vowel.
export function wordShare(value: string): number {
  let covered = 0;
  for (const piece of value.match(/[A-Z]?[a-z]+|[A-Z]+(?![a-z])/g) ?? []) {
    if (piece.length >= 3 && /[aeiouyAEIOUY]/.test(piece) && !/[A-Z]/.test(piece.slice(1))) covered += piece.length;
  }
  return covered / value.length;
}

// A value that looks machine-generated rather than a word, identifier, path, URL or prose: long
// enough, no whitespace, mixes letters and digits, high entropy, mostly not made of words.
export function looksRandom(value: string, minLength = 12, minEntropy = 3.3): boolean {
  if (value.length < minLength || PLACEHOLDER.test(value) || /\s/.test(value)) return false;
  if (!/[0-9]/.test(value) || !/[A-Za-z]/.test(value)) return false;
  if (/^[/.~]|:\/\//.test(value)) return false; // a path or URL (credentials in URLs have their own rule)
  if (wordShare(value) >= 0.6) return false;
  return shannonEntropy(value) >= minEntropy;
}

// Template and variable syntax inside a value: `${PW}`, `{{ pw }}`, `%PW%`, `$PW`, `{0}`.
const VARIABLE = /\$\{|\{\{|%[A-Za-z_]+%|^\$|\{\d+\}/;
// Characters that mark code, paths or markup rather than a password.
const CODE_LIKE = /^[/.~#[@&]|:\/\/|[()[\]{}<>\\]/;
const EMAIL = /^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$/;

// A value that context already calls a password (`Password=…;`, `-p…`, `setPassword("…")`):
// random-looking, or made by a person the way password rules ask (three of lower case, upper
// case, digits and symbols, a symbol among them). Identifiers, environment variable names, paths, e-mail addresses, templates and
// stand-ins such as `changeme` are not.
export function passwordLike(value: string, minLength = 8): boolean {
  if (value.length < minLength || value.length > 128 || /\s/.test(value)) return false;
  if (PLACEHOLDER.test(value) || PLACEHOLDER_PASSWORD.test(value) || VARIABLE.test(value)) return false;
  if (CODE_LIKE.test(value) || EMAIL.test(value) || /^[A-Z][A-Z0-9_]*$/.test(value)) return false;
  if (looksRandom(value, minLength, 2.5)) return true;
  if (!/[^A-Za-z0-9_.-]/.test(value) || !/[A-Za-z]/.test(value)) return false;
  // Letters, a digit and a symbol; without a digit, mixed case and not mostly words (`Password:`).
  return /[0-9]/.test(value) || (/[a-z]/.test(value) && /[A-Z]/.test(value) && wordShare(value) < 0.6);
}

const CREDENTIAL_KEYWORD =
  /password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|credential|private[_-]?key|client[_-]?secret|signing[_-]?key/i;
// `pass` alone counts as a whole word only, so case matters: `dbPass`, `DB_PASS`, `db_pass`, not
// `bypass`, `BYPASS`, `compass` or `passive`.
const PASS_WORD = /(?:^|[^A-Za-z])(?:pass|Pass|PASS)(?![a-z])|[a-z0-9]Pass(?![a-z])|(?:^|[^A-Z])PASS(?![A-Za-z])/;
const PASS_NAME = /pass|pwd/i;

/** A name that says it holds a credential (`apiKey`, `DB_PASSWORD`, `dbPass`). */
function isCredentialName(name: string): boolean {
  return CREDENTIAL_KEYWORD.test(name) || PASS_WORD.test(name);
}

const PATTERNS: Pattern[] = [
  {
    // The header followed by key material (optional `Proc-Type:` lines, escaped newlines and
    // string-concatenation characters between): a comment that only names the header is no leak.
    kind: 'private-key',
    regex:
      /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\\[rn]|[\s"'`+,]|[A-Za-z-]+:[^\n]*\n)*[A-Za-z0-9+/=]{32,}/g,
  },
  { kind: 'aws-access-key-id', regex: /\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b/g },
  {
    kind: 'aws-secret-access-key',
    regex: /aws_?secret_?(?:access_?)?key["']?\s*(?::=|=>|[:=])\s*["']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])/gi,
  },
  { kind: 'github-token', regex: /\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b/g },
  { kind: 'gitlab-token', regex: /\bglpat-[A-Za-z0-9_-]{20,}\b/g },
  { kind: 'slack-token', regex: /\bxox[abposr]-(?:[0-9A-Za-z]+-){1,4}[0-9A-Za-z]{6,}\b/g },
  { kind: 'slack-webhook', regex: /https:\/\/hooks\.slack\.com\/(?:services|workflows)\/[A-Za-z0-9_/]{20,}/g },
  { kind: 'stripe-key', regex: /\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}\b/g },
  { kind: 'google-api-key', regex: /\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])/g },
  { kind: 'google-oauth-secret', regex: /\bGOCSPX-[A-Za-z0-9_-]{28}(?![A-Za-z0-9_-])/g },
  { kind: 'jwt', regex: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g },
  { kind: 'npm-token', regex: /\bnpm_[A-Za-z0-9]{36}\b/g },
  { kind: 'anthropic-key', regex: /\bsk-ant-[A-Za-z0-9_-]{32,}/g },
  {
    kind: 'openai-key',
    regex: /\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])/g,
    accept: (match) => looksRandom(match[0], 32, 3.5) && !match[0].startsWith('sk-ant-'),
  },
  { kind: 'huggingface-token', regex: /\bhf_[A-Za-z0-9]{34,}\b/g, accept: (match) => looksRandom(match[0], 34, 3.5) },
  { kind: 'sendgrid-key', regex: /\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b/g },
  { kind: 'twilio-key', regex: /\bSK[0-9a-f]{32}\b/g, accept: (match) => looksRandom(match[0], 34, 3.0) },
  { kind: 'shopify-token', regex: /\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b/g },
  { kind: 'azure-storage-key', regex: /AccountKey=[A-Za-z0-9+/]{60,}={0,2}/g },
  {
    kind: 'url-credentials',
    regex: /\b[a-z][a-z0-9+.-]{1,20}:\/\/[^\s:/@'"`]{1,64}:([^\s:/@'"`]{6,128})@[A-Za-z0-9.-]+/g,
    accept: (match) => !PLACEHOLDER.test(match[1]) && !PLACEHOLDER_PASSWORD.test(match[1]) && !/^[$%{<]/.test(match[1]),
  },
  {
    // A random-looking quoted string assigned to a credential-like name:
    // `apiKey: "…"`, `"client_secret" => '…'`, `password := "…"`.
    kind: 'assigned-secret',
    regex: /(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]+)["'\]]?\s*(?::=|=>|[:=])\s*["'\x60]([^"'\x60\s]{8,256})["'\x60]/g,
    // Passwords are often short human strings: a lower bar for those names.
    accept: (match) =>
      isCredentialName(match[1]) && (PASS_NAME.test(match[1]) ? passwordLike(match[2]) : looksRandom(match[2])),
  },
  {
    // The unquoted config-file form, a whole line: `DB_PASSWORD=…`, `api_key: …`, `export TOKEN=…`.
    // Stricter (longer, higher entropy) because an unquoted value may be an identifier.
    kind: 'assigned-secret',
    regex: /^[ \t]*(?:export[ \t]+)?([A-Za-z0-9_.-]+)[ \t]*[:=][ \t]*([A-Za-z0-9+/=_\-.~]{16,256})[ \t]*(?:#.*)?$/gm,
    accept: (match) => isCredentialName(match[1]) && looksRandom(match[2], 16, 3.5),
  },
  {
    // The same for password names with a shorter, person-made value: `password: Xk7#…` in YAML,
    // `DB_PASS=…` in an env file.
    kind: 'assigned-secret',
    regex:
      /^[ \t]*(?:export[ \t]+|-[ \t]+)?([A-Za-z0-9_.-]+)["']?[ \t]*[:=][ \t]*([^\s"'\x60#]{6,128})[ \t]*(?:#.*)?$/gm,
    accept: (match) => isCredentialName(match[1]) && PASS_NAME.test(match[1]) && passwordLike(match[2], 6),
    trigger: PASS_NAME,
  },
  {
    // An environment variable set for one command: `PGPASSWORD=… psql`.
    kind: 'command-line-password',
    regex: /(?<![\w$-])([A-Z0-9_]*(?:PASSWORD|PASSWD|PASS|PWD)[A-Z0-9_]*)=([^\s"'\x60$;&|]{6,128})(?=[ \t]+[\w./-])/g,
    accept: (match) => passwordLike(match[2], 6),
    trigger: /PASS|PWD/,
  },
  {
    // `Authorization: Bearer …` / `Basic …` / `token …` with a token-like value.
    kind: 'authorization-header',
    regex: /\b(?:Bearer|Basic|Token)[ \t]+([A-Za-z0-9._~+/-]{16,1024}={0,2})(?![A-Za-z0-9._~+/=-])/gi,
    accept: (match) => looksRandom(match[1], 16, 3.0),
    trigger: /bearer|basic|token/i,
  },
  {
    // A connection string's password (ADO.NET, ODBC, JDBC properties): `…;Password=…;`.
    kind: 'connection-string-password',
    regex: /(?<![A-Za-z0-9_])(?:password|pwd)[ \t]*=[ \t]*([^;"'\s<>{}()[\]$%]{4,128})(?=[ \t]*[;"'])/gi,
    accept: (match) => passwordLike(match[1], 6),
    trigger: /password|pwd/i,
  },
  {
    // `curl -u user:password`, `--user user:password`.
    kind: 'command-line-password',
    regex: /\bcurl\b[^\n]{0,300}?[ \t](?:-u|--user)(?:[ \t]+|=)["']?[^\s:"']{1,64}:([^\s"']{4,128})/g,
    accept: (match) => passwordLike(match[1], 6),
    trigger: /curl/,
  },
  {
    // The MySQL clients take the password glued to `-p`: `mysql -u root -p…`.
    kind: 'command-line-password',
    regex:
      /\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlcheck|mariadb|mariadb-dump)\b[^\n]{0,300}?[ \t]-p([^\s"'$-][^\s"']{3,127})/g,
    accept: (match) => passwordLike(match[1], 6),
    trigger: /mysql|mariadb/,
  },
  {
    // `--password=…`, `--password …`, `sshpass -p …` on a command line.
    kind: 'command-line-password',
    regex:
      /(?:--(?:[a-z]+-)?(?:password|passwd|pass)(?:=|[ \t]+)|\bsshpass[ \t]+-p[ \t]*)["']?([^\s"'$<{-][^\s"']{3,127})/gi,
    accept: (match) => passwordLike(match[1], 6),
    trigger: /--[a-z-]*pass|sshpass/i,
  },
];

// A string literal on one line: double, single or backquoted (no template substitutions).
const LITERAL = /"((?:[^"\\\n]|\\.){0,256})"|'((?:[^'\\\n]|\\.){0,256})'|\x60((?:[^\x60\\\n$]|\\.){0,256})\x60/g;
// Credential-like words a literal may sit next to (`"X-Api-Key", "…"`, `auth: "…"`).
const CREDENTIAL_WORD =
  /password|passwd|passphrase|pwd|secret|token(?!iz)|api[_-]?key|apikey|access[_-]?key|auth(?!or)|bearer|credential|private[_-]?key/i;
// A call whose name says it takes a credential: `login(…)`, `setPassword(…)`, `withToken(…)`.
const CREDENTIAL_CALL =
  /((?:log_?in|log_?on|sign_?in|auth|pass|pwd|secret|token|credential|api_?key|connect)[\w$]{0,80})[ \t]*\(([^()\n]{1,300})\)/gi;
const NEAR_CHARS = 48;

// String literals that hold a credential by their context: arguments of a credential call, or
// random-looking values a few characters after a credential-like word on the same line.
function credentialLiterals(text: string, spans: SecretSpan[]): void {
  CREDENTIAL_CALL.lastIndex = 0;
  let call: RegExpExecArray | null;
  while ((call = CREDENTIAL_CALL.exec(text)) !== null) {
    const passCall = /log_?in|log_?on|sign_?in|auth|pass|pwd|connect/i.test(call[1]);
    const argsAt = call.index + call[0].length - 1 - call[2].length;
    LITERAL.lastIndex = 0;
    let literal: RegExpExecArray | null;
    while ((literal = LITERAL.exec(call[2])) !== null) {
      const value = literal[1] ?? literal[2] ?? literal[3] ?? '';
      if (passCall ? passwordLike(value) : looksRandom(value)) {
        spans.push({
          kind: 'credential-literal',
          start: argsAt + literal.index,
          end: argsAt + literal.index + literal[0].length,
        });
      }
    }
  }
  LITERAL.lastIndex = 0;
  let literal: RegExpExecArray | null;
  while ((literal = LITERAL.exec(text)) !== null) {
    const value = literal[1] ?? literal[2] ?? literal[3] ?? '';
    if (value.length < 8 || !/[0-9]/.test(value) || !/[A-Za-z]/.test(value)) continue;
    const lineStart = text.lastIndexOf('\n', literal.index - 1) + 1;
    const before = text.slice(Math.max(lineStart, literal.index - NEAR_CHARS), literal.index);
    const word = CREDENTIAL_WORD.exec(before)?.[0] ?? (PASS_WORD.test(before) ? 'pass' : null);
    if (word && (PASS_NAME.test(word) ? passwordLike(value) : looksRandom(value))) {
      spans.push({ kind: 'credential-literal', start: literal.index, end: literal.index + literal[0].length });
    }
  }
}

// Cheap pre-check: every pattern needs one of these substrings (case-insensitive) to match.
const TRIGGERS =
  /PRIVATE KEY|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|secret|gh[pousr]_|github_pat_|glpat-|xox|hooks\.slack|_live_|_test_|AIza|GOCSPX|eyJ|npm_|sk-|hf_|SG\.|SK[0-9a-f]|shp|AccountKey|:\/\/|pass|pwd|token|api[_-]?key|access[_-]?key|auth|credential|private[_-]?key|signing[_-]?key|bearer|basic|curl|mysql|mariadb|log_?[io]n|sign_?in|connect/i;

function lineOf(text: string, index: number, lineStarts: number[]): number {
  let lo = 0;
  let hi = lineStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (lineStarts[mid] <= index) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

/** Where a credential-looking span is: offsets only, never the text. */
export interface SecretSpan {
  kind: SecretKind;
  start: number;
  end: number;
}

// Spans found in the text as written: our patterns, credential literals, secretlint's rules.
function directSpans(text: string): SecretSpan[] {
  const spans: SecretSpan[] = [];
  if (TRIGGERS.test(text)) {
    for (const pattern of PATTERNS) {
      if (pattern.trigger && !pattern.trigger.test(text)) continue;
      pattern.regex.lastIndex = 0;
      let match: RegExpExecArray | null;
      while ((match = pattern.regex.exec(text)) !== null) {
        if (match[0].length === 0) pattern.regex.lastIndex++;
        if (pattern.accept && !pattern.accept(match)) continue;
        spans.push({ kind: pattern.kind, start: match.index, end: match.index + match[0].length });
      }
    }
    credentialLiterals(text, spans);
  }
  for (const hit of secretlintSpans(text))
    spans.push({ kind: `secretlint-${hit.rule}`, start: hit.start, end: hit.end });
  return spans;
}

const LITERAL_SOURCE = LITERAL.source;
// Two or more string literals joined by `+`, `.`/`..` (PHP, Lua) or nothing (Python, C, shell),
// across line breaks: `"AKIA…" + "…"`.
const JOINED = new RegExp(
  String.raw`(?:${LITERAL_SOURCE})(?:[ \t\r\n]*(?:(?:\+|\.\.?)[ \t\r\n]*)?(?:${LITERAL_SOURCE}))+`,
  'g',
);
const MIN_JOINED = 12;

// Each joined literal is scanned as one literal in its line (so `id = "…" + "…"` keeps its
// name); a hit marks the whole expression.
function joinedSpans(text: string, spans: SecretSpan[]): void {
  if (!/["'\x60][ \t\r\n]*(?:\+|\.\.?)?[ \t\r\n]*["'\x60]/.test(text)) return;
  JOINED.lastIndex = 0;
  let group: RegExpExecArray | null;
  while ((group = JOINED.exec(text)) !== null) {
    let joined = '';
    LITERAL.lastIndex = 0;
    let literal: RegExpExecArray | null;
    while ((literal = LITERAL.exec(group[0])) !== null) joined += literal[1] ?? literal[2] ?? literal[3] ?? '';
    // Joined code or markup (quotes inside) is no split credential.
    if (joined.length < MIN_JOINED || /["'\x60]/.test(joined)) continue;
    const start = group.index;
    const end = start + group[0].length;
    const lineStart = text.lastIndexOf('\n', start - 1) + 1;
    const lineEnd = text.indexOf('\n', end);
    const head = `${text.slice(lineStart, start)}"`;
    const snippet = `${head + joined}"${text.slice(end, lineEnd < 0 ? text.length : lineEnd)}`;
    for (const span of directSpans(snippet)) {
      if (span.end > head.length - 1 && span.start < head.length + joined.length + 1)
        spans.push({ kind: span.kind, start, end });
    }
  }
}

// Standard base64 of 15 bytes or more, padded to a multiple of 4.
const BASE64_RUN =
  /(?<![A-Za-z0-9+/=_-])(?:[A-Za-z0-9+/]{4}){5,256}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=_-])/g;

// A base64 run that decodes to printable text is scanned decoded: `Buffer.from("QUtJQ…", "base64")`.
function decodedSpans(text: string, spans: SecretSpan[]): void {
  BASE64_RUN.lastIndex = 0;
  let run: RegExpExecArray | null;
  while ((run = BASE64_RUN.exec(text)) !== null) {
    const value = run[0];
    if (!/[0-9]/.test(value) || !/[a-z]/.test(value) || !/[A-Z]/.test(value)) continue;
    const decoded = Buffer.from(value, 'base64').toString('latin1');
    if (!/^[\x20-\x7e\t\r\n]+$/.test(decoded)) continue;
    for (const span of directSpans(decoded))
      spans.push({ kind: span.kind, start: run.index, end: run.index + value.length });
  }
}

// Every credential-looking span in the text.
export function secretSpans(text: string): SecretSpan[] {
  const spans = directSpans(text);
  joinedSpans(text, spans);
  decodedSpans(text, spans);
  return spans;
}

// Every credential-looking span in the text (kind and line only).
export function scanSecrets(text: string): SecretHit[] {
  const spans = secretSpans(text);
  if (spans.length === 0) return [];
  const lineStarts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) lineStarts.push(i + 1);
  const hits = spans.map((span) => ({ kind: span.kind, line: lineOf(text, span.start, lineStarts) }));
  hits.sort((a, b) => a.line - b.line || a.kind.localeCompare(b.kind));
  return hits;
}
