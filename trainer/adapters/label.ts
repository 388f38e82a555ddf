// What tells adapters apart to a person: method and rank, the commit trained at, and age
// ("LoRA r16 · 1a2b3c4 · 2 h ago"). No imports: server/protocol.ts re-exports it for the extension.

export interface LabelParts {
  method: string | null;
  /** LoRA rank, when the method has one. */
  rank: number | null;
  /** Commit the data was mined at. */
  head: string | null;
  dirty?: boolean;
}

/** `LoRA r16 · 1a2b3c4` (no age: that changes while the label is shown). */
export function adapterLabel(parts: LabelParts): string {
  const method =
    parts.method === 'lora'
      ? `LoRA${parts.rank !== null ? ` r${parts.rank}` : ''}`
      : parts.method === 'full'
        ? 'full'
        : (parts.method ?? '?');
  const commit = parts.head ? `${parts.head.slice(0, 7)}${parts.dirty ? '+' : ''}` : 'no commit';
  return `${method} · ${commit}`;
}

/** `just now`, `5 min ago`, `2 h ago`, `3 d ago`; '' for a date that does not parse. */
export function ageText(created: string, now: number = Date.now()): string {
  const at = Date.parse(created);
  if (Number.isNaN(at)) return '';
  const seconds = Math.max(0, (now - at) / 1000);
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86_400)} d ago`;
}

/** The label with the age, for a list read now. */
export function labelWithAge(label: string, created: string, now: number = Date.now()): string {
  const age = ageText(created, now);
  return age ? `${label} · ${age}` : label;
}
