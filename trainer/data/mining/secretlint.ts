// secretlint's recommended rules (a maintained set of vendor token formats, from the npm
// package) run synchronously inside Idiom's scanner. Only each report's rule and range are kept:
// secretlint's messages quote the secret, so they are never built.

import { rules as presetRules } from '@secretlint/secretlint-rule-preset-recommend';

/** A span one of secretlint's rules reported. */
export interface SecretlintSpan {
  rule: string; // the rule's short name: `aws`, `basicauth`, `database-connection-string`, …
  start: number;
  end: number;
}

// The parts of secretlint's rule API that its scanner rules use.
interface RuleReport {
  range: readonly [number, number];
}
interface RuleContext {
  report(descriptor: RuleReport): void;
  createTranslator(messages: unknown): () => string;
  ignore(descriptor: RuleReport): void;
}
interface RuleSource {
  content: string;
  filePath?: string;
  ext: string;
  contentType: 'text';
}
interface RuleCreator {
  meta: { id: string; type?: string };
  create(context: RuleContext, options: Record<string, unknown>): { file?(source: RuleSource): unknown };
}

const PREFIX = '@secretlint/secretlint-rule-';
// `filter-comments` would let a `secretlint-disable` comment in a mined repository switch the
// scanner off, so it is not run.
const SKIPPED = new Set(['filter-comments']);

interface LoadedRule {
  name: string;
  file(source: RuleSource): unknown;
}

let sink: SecretlintSpan[] | null = null;
let current = '';
let loaded: LoadedRule[] | null = null;

function load(): LoadedRule[] {
  if (loaded) return loaded;
  const context: RuleContext = {
    report: (descriptor) => sink?.push({ rule: current, start: descriptor.range[0], end: descriptor.range[1] }),
    createTranslator: () => () => '', // no message text: it would hold the secret
    ignore: () => undefined,
  };
  loaded = [];
  for (const creator of presetRules as unknown as RuleCreator[]) {
    const name = creator.meta.id.startsWith(PREFIX) ? creator.meta.id.slice(PREFIX.length) : creator.meta.id;
    if (SKIPPED.has(name) || creator.meta.type === 'filter') continue;
    const handlers = creator.create(context, {});
    if (handlers.file) loaded.push({ name, file: handlers.file.bind(handlers) });
  }
  return loaded;
}

/** The names of the rules that run (for tests and the README). */
export function secretlintRuleNames(): string[] {
  return load().map((rule) => rule.name);
}

/** Every span secretlint's recommended rules report in `text`. */
export function secretlintSpans(text: string): SecretlintSpan[] {
  const rules = load();
  const spans: SecretlintSpan[] = [];
  // No path and no extension: no rule reads a file from disk or takes a binary (`.p12`) branch.
  const source: RuleSource = { content: text, ext: '', contentType: 'text' };
  sink = spans;
  try {
    for (const rule of rules) {
      current = rule.name;
      // Every scanner rule reports synchronously on text; a promise would mean a binary branch.
      const result = rule.file(source);
      if (result instanceof Promise) result.catch(() => undefined);
    }
  } finally {
    sink = null;
  }
  return spans;
}
