// Repository mining: git repository → filtered, secret-free, deduplicated source files with their
// history → tree-sitter chunks → text examples, with the newest commits held out.
// Files stream through one at a time (blobs read a few ahead), so memory stays bounded by the
// largest file plus small per-file indexes, whatever the size of the repository.

import ignore from 'ignore';
import { DuplicateIndex } from './dedup';
import { buildExamples, DEFAULT_EXAMPLE_OPTIONS, type Example, type ExampleOptions, type Split } from './examples';
import {
  decodeSource,
  DEFAULT_FILTER_OPTIONS,
  exclusionByContent,
  exclusionByPath,
  looksBinary,
  type ExclusionReason,
  type FilterOptions,
} from './filters';
import { GitRepository, type TreeEntry } from './git';
import { fileExtension, languageForPath, languageForShebang, type LanguageSpec } from './languages';
import { scanSecrets, type SecretKind } from './secrets';
import { DEFAULT_SPLIT_OPTIONS, temporalSplit, type SplitOptions } from './split';
import { indexSyntax, parserFor, type Chunk, type SyntaxIndex } from './syntax';

export interface MineOptions {
  filters: FilterOptions;
  examples: ExampleOptions;
  split: SplitOptions;
  // Newest non-merge commits read for history and the split.
  maxCommits: number;
  // Blobs requested ahead of the one being processed.
  readAhead: number;
  // Warnings (no held-out split, unparsable file, …); default: none.
  onWarning?: (message: string) => void;
  // Repository-relative paths that may be mined; others are excluded as 'policy' (compliance
  // training reads only the paths its policy allows). Default: every path.
  pathFilter?: (path: string) => boolean;
  // Stops mining between files (and after the history walk) by throwing the signal's reason.
  signal?: AbortSignal;
}

// What callers pass: any subset, nested groups too.
export type MineOptionsInput = Partial<Omit<MineOptions, 'filters' | 'examples' | 'split'>> & {
  filters?: Partial<FilterOptions>;
  examples?: Partial<ExampleOptions>;
  split?: Partial<SplitOptions>;
};

export const DEFAULT_MINE_OPTIONS: MineOptions = {
  filters: DEFAULT_FILTER_OPTIONS,
  examples: DEFAULT_EXAMPLE_OPTIONS,
  split: DEFAULT_SPLIT_OPTIONS,
  maxCommits: 20_000,
  readAhead: 16,
};

export interface MinedFile {
  path: string; // relative to the repository root
  language: string;
  // UTF-8 text, CRLF/CR normalised to LF, BOM dropped.
  text: string;
  oid: string;
  bytes: number;
  lastCommitTime: number | null;
  churn: number;
  split: Split;
  // Held-out files: 1-based lines changed in the held-out commits.
  changedLines: number[];
  chunks: Chunk[];
}

export interface MineSummary {
  repo: { root: string; folder: string; head: string | null; shallow: boolean };
  files: {
    tracked: number;
    kept: number;
    excluded: Partial<Record<ExclusionReason, number>>;
    heldOut: number;
  };
  bytes: { tracked: number; read: number; kept: number };
  examples: number;
  examplesByKind: Record<string, number>;
  secretsExcluded: number;
  secretKinds: Partial<Record<SecretKind, number>>;
  languages: Record<string, number>;
  chunks: number;
  split: {
    commits: number;
    heldOutCommits: string[];
    baseCommit: string | null;
    heldOutFiles: number;
    heldOutLines: number;
    note: string | null;
  };
  warnings: string[];
  seconds: number;
}

export type FileSink = (file: MinedFile, examples: Example[]) => void | Promise<void>;

interface Candidate {
  entry: TreeEntry;
  index: number;
  language: LanguageSpec | null; // null: extensionless, decided by its #! line
}

export function mergeMineOptions(options: MineOptionsInput): MineOptions {
  return {
    ...DEFAULT_MINE_OPTIONS,
    ...options,
    filters: { ...DEFAULT_FILTER_OPTIONS, ...options.filters },
    examples: { ...DEFAULT_EXAMPLE_OPTIONS, ...options.examples },
    split: { ...DEFAULT_SPLIT_OPTIONS, ...options.split },
  };
}

function sortedRecord(counts: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// Mines the git repository holding `folder` (only files under `folder`), calling `sink` for every
// kept file with its examples, in a deterministic order: held-out files first (so a training
// file that duplicates a held-out one is dropped, not the other way round), then by path.
export async function mineRepository(
  folder: string,
  partialOptions: MineOptionsInput,
  sink: FileSink,
): Promise<MineSummary> {
  const started = performance.now();
  const options = mergeMineOptions(partialOptions);
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    options.onWarning?.(message);
  };
  const repo = await GitRepository.open(folder);
  const excluded = new Map<string, number>();
  const exclude = (reason: ExclusionReason) => excluded.set(reason, (excluded.get(reason) ?? 0) + 1);
  const languages = new Map<string, number>();
  const byKind = new Map<string, number>();
  const secretKinds = new Map<string, number>();
  const summary: MineSummary = {
    repo: { root: repo.root, folder: repo.prefix, head: repo.head, shallow: repo.shallow },
    files: { tracked: 0, kept: 0, excluded: {}, heldOut: 0 },
    bytes: { tracked: 0, read: 0, kept: 0 },
    examples: 0,
    examplesByKind: {},
    secretsExcluded: 0,
    secretKinds: {},
    languages: {},
    chunks: 0,
    split: { commits: 0, heldOutCommits: [], baseCommit: null, heldOutFiles: 0, heldOutLines: 0, note: null },
    warnings,
    seconds: 0,
  };
  if (!repo.head) {
    warn('the repository has no commits yet: nothing to mine');
    summary.split.note = 'no commits';
    summary.seconds = (performance.now() - started) / 1000;
    return summary;
  }

  const entries = await repo.treeEntries();
  const ignoredByGit = await repo.ignoredTrackedPaths();
  const idiomIgnore = ignore().add(repo.readIdiomIgnore());
  summary.files.tracked = entries.length;
  const candidates: Candidate[] = [];
  const isCandidate = new Uint8Array(entries.length);
  entries.forEach((entry, index) => {
    summary.bytes.tracked += entry.size ?? 0;
    const reason = pathExclusion(entry, ignoredByGit, idiomIgnore, options.filters, options.pathFilter);
    if (reason) return exclude(reason);
    const language = languageForPath(entry.path) ?? null;
    if (!language && fileExtension(entry.path) !== '') return exclude('unsupported-language');
    candidates.push({ entry, index, language });
    isCandidate[index] = 1;
  });

  const commits = await repo.history(
    entries.map((entry) => entry.path),
    options.maxCommits,
  );
  const history = entries.map(() => ({ lastCommitTime: null as number | null, churn: 0 }));
  for (const commit of commits) {
    for (const file of commit.files) {
      history[file].churn++;
      history[file].lastCommitTime ??= commit.time;
    }
  }
  options.signal?.throwIfAborted();
  const split = temporalSplit(commits, (file) => isCandidate[file] === 1, candidates.length, options.split);
  if (split.note) warn(split.note);
  const heldOutPaths = new Set([...split.heldOutFiles].map((file) => entries[file].path));
  const changedLines = await repo.changedLines(split.baseCommit, heldOutPaths);
  summary.split = {
    commits: split.commitCount,
    heldOutCommits: split.heldOutCommits.map((commit) => commit.id),
    baseCommit: split.baseCommit,
    heldOutFiles: 0,
    heldOutLines: 0,
    note: split.note,
  };

  const ordered = [
    ...candidates.filter((candidate) => split.heldOutFiles.has(candidate.index)),
    ...candidates.filter((candidate) => !split.heldOutFiles.has(candidate.index)),
  ];
  const duplicates = new DuplicateIndex(0.9);
  const reader = repo.openBlobReader();
  const inFlight: Promise<Buffer | null>[] = [];
  let next = 0;
  const fill = () => {
    while (next < ordered.length && inFlight.length < options.readAhead)
      inFlight.push(reader.read(ordered[next++].entry.oid));
  };
  try {
    for (let position = 0; position < ordered.length; position++) {
      options.signal?.throwIfAborted();
      fill();
      const bytes = await inFlight.shift()!;
      const { entry, index } = ordered[position];
      if (!bytes) {
        warn(`${entry.path}: blob ${entry.oid} is missing from the object store`);
        continue;
      }
      summary.bytes.read += bytes.length;
      if (looksBinary(bytes)) {
        exclude('binary');
        continue;
      }
      const text = decodeSource(bytes);
      if (text === undefined) {
        exclude('invalid-utf8');
        continue;
      }
      if (text.trim().length === 0) {
        exclude('empty');
        continue;
      }
      const newline = text.indexOf('\n');
      const language = ordered[position].language ?? languageForShebang(newline < 0 ? text : text.slice(0, newline));
      if (!language) {
        exclude('unsupported-language');
        continue;
      }
      const secrets = scanSecrets(text);
      if (secrets.length > 0) {
        exclude('secret');
        for (const kind of new Set(secrets.map((hit) => hit.kind)))
          secretKinds.set(kind, (secretKinds.get(kind) ?? 0) + 1);
        continue;
      }
      const contentReason = exclusionByContent(text, options.filters);
      if (contentReason) {
        exclude(contentReason);
        continue;
      }
      const verdict = duplicates.check(entry.path, text);
      if (verdict.kind !== 'unique') {
        exclude(verdict.kind);
        continue;
      }
      // A grammar that cannot load is a broken install: fail once, clearly, not per file.
      await parserFor(language);
      let syntax: SyntaxIndex | null = null;
      try {
        syntax = await indexSyntax(text, language);
      } catch (error) {
        warn(`${entry.path}: ${(error as Error).message}; plain examples only`);
      }
      const fileSplit: Split = split.heldOutFiles.has(index) ? 'heldout' : 'train';
      const lines = fileSplit === 'heldout' ? (changedLines.get(entry.path) ?? []) : [];
      const file: MinedFile = {
        path: entry.path,
        language: language.id,
        text,
        oid: entry.oid,
        bytes: bytes.length,
        lastCommitTime: history[index].lastCommitTime,
        churn: history[index].churn,
        split: fileSplit,
        changedLines: lines,
        chunks: syntax?.chunks ?? [],
      };
      const examples = buildExamples(
        { path: entry.path, language: language.id, text, split: fileSplit, changedLines: lines },
        syntax,
        options.examples,
      );
      summary.files.kept++;
      summary.bytes.kept += bytes.length;
      summary.chunks += file.chunks.length;
      if (fileSplit === 'heldout') {
        summary.split.heldOutFiles++;
        summary.split.heldOutLines += lines.length;
      }
      languages.set(language.id, (languages.get(language.id) ?? 0) + 1);
      summary.examples += examples.length;
      for (const example of examples) byKind.set(example.kind, (byKind.get(example.kind) ?? 0) + 1);
      await sink(file, examples);
    }
  } finally {
    reader.close();
    // Settle what was requested ahead so no rejection goes unhandled.
    await Promise.allSettled(inFlight);
  }
  summary.files.heldOut = summary.split.heldOutFiles;
  summary.secretsExcluded = (excluded.get('secret') ?? 0) + (excluded.get('secret-file') ?? 0);
  summary.files.excluded = sortedRecord(excluded);
  summary.examplesByKind = sortedRecord(byKind);
  summary.secretKinds = sortedRecord(secretKinds);
  summary.languages = sortedRecord(languages);
  summary.seconds = (performance.now() - started) / 1000;
  return summary;
}

function pathExclusion(
  entry: TreeEntry,
  ignoredByGit: ReadonlySet<string>,
  idiomIgnore: ReturnType<typeof ignore>,
  filters: FilterOptions,
  pathFilter: ((path: string) => boolean) | undefined,
): ExclusionReason | undefined {
  if (entry.type === 'commit') return 'submodule';
  if (entry.mode === '120000') return 'symlink';
  const byPath = exclusionByPath(entry.path);
  if (byPath === 'secret-file') return byPath;
  if (pathFilter && !pathFilter(entry.path)) return 'policy';
  if (ignoredByGit.has(entry.path)) return 'gitignored';
  if (isIgnored(idiomIgnore, entry.path)) return 'idiomignore';
  if (byPath) return byPath;
  if ((entry.size ?? 0) > filters.maxFileBytes) return 'too-large';
  return undefined;
}

function isIgnored(rules: ReturnType<typeof ignore>, path: string): boolean {
  try {
    return rules.ignores(path);
  } catch {
    return false; // a path the ignore package cannot test (never produced by git)
  }
}

// Every example of the repository in memory, for tests and small repositories.
export async function collectExamples(
  folder: string,
  options: MineOptionsInput = {},
): Promise<{ files: MinedFile[]; examples: Example[]; summary: MineSummary }> {
  const files: MinedFile[] = [];
  const examples: Example[] = [];
  const summary = await mineRepository(folder, options, (file, fileExamples) => {
    files.push(file);
    examples.push(...fileExamples);
  });
  return { files, examples, summary };
}
