// Content scanner for credentials. A hit never carries the matched text: only its kind and line,
// so reports and logs cannot leak what they found. The miner excludes a file with any hit.

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
  | 'assigned-secret';

export interface SecretHit {
  kind: SecretKind;
  line: number; // 1-based
}

interface Pattern {
  kind: SecretKind;
  regex: RegExp;
  // Rejects look-alikes (placeholders, identifiers) after the regex matched.
  accept?: (match: RegExpExecArray) => boolean;
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

// A value that looks machine-generated rather than a word, identifier, path or URL: long
// enough, mixes letters and digits, high entropy, mostly not made of words.
export function looksRandom(value: string, minLength = 12, minEntropy = 3.3): boolean {
  if (value.length < minLength || PLACEHOLDER.test(value)) return false;
  if (!/[0-9]/.test(value) || !/[A-Za-z]/.test(value)) return false;
  if (/^[/.~]|:\/\//.test(value)) return false; // a path or URL (credentials in URLs have their own rule)
  if (wordShare(value) >= 0.6) return false;
  return shannonEntropy(value) >= minEntropy;
}

const NAME = String.raw`[A-Za-z0-9_.-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|credential|private[_-]?key|client[_-]?secret|signing[_-]?key)[A-Za-z0-9_.-]*`;

const PATTERNS: Pattern[] = [
  {
    // The header followed by key material (optional `Proc-Type:` lines, escaped newlines and
    // string-concatenation characters between): a comment that only names the header is no leak.
    kind: 'private-key',
    regex: /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\\[rn]|[\s"'`+,]|[A-Za-z-]+:[^\n]*\n)*[A-Za-z0-9+/=]{32,}/g,
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
    regex: new RegExp(
      String.raw`(?<![A-Za-z0-9_.-])(${NAME})["'\]]?\s*(?::=|=>|[:=])\s*["'\x60]([^"'\x60\s]{8,256})["'\x60]`,
      'gi',
    ),
    // Passwords are often short human strings: a lower bar for those names.
    accept: (match) => (/pass|pwd/i.test(match[1]) ? looksRandom(match[2], 8, 2.5) : looksRandom(match[2])),
  },
  {
    // The unquoted config-file form, a whole line: `DB_PASSWORD=…`, `api_key: …`, `export TOKEN=…`.
    // Stricter (longer, higher entropy) because an unquoted value may be an identifier.
    kind: 'assigned-secret',
    regex: new RegExp(
      String.raw`^[ \t]*(?:export[ \t]+)?(${NAME})[ \t]*[:=][ \t]*([A-Za-z0-9+/=_\-.~]{16,256})[ \t]*(?:#.*)?$`,
      'gim',
    ),
    accept: (match) => looksRandom(match[2], 16, 3.5),
  },
];

// Cheap pre-check: every pattern needs one of these substrings (case-insensitive) to match.
const TRIGGERS =
  /PRIVATE KEY|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|secret|gh[pousr]_|github_pat_|glpat-|xox|hooks\.slack|_live_|_test_|AIza|GOCSPX|eyJ|npm_|sk-|hf_|SG\.|SK[0-9a-f]|shp|AccountKey|:\/\/|password|passwd|passphrase|pwd|token|api_?key|access_?key|auth_?key|credential|private_?key|signing_?key/i;

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

// Every credential-looking span in the text, in pattern order.
export function secretSpans(text: string): SecretSpan[] {
  if (!TRIGGERS.test(text)) return [];
  const spans: SecretSpan[] = [];
  for (const pattern of PATTERNS) {
    pattern.regex.lastIndex = 0;
    let match: RegExpExecArray | null;
    while ((match = pattern.regex.exec(text)) !== null) {
      if (match[0].length === 0) pattern.regex.lastIndex++;
      if (pattern.accept && !pattern.accept(match)) continue;
      spans.push({ kind: pattern.kind, start: match.index, end: match.index + match[0].length });
    }
  }
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
