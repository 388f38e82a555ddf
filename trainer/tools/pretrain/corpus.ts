// Builds the pretraining corpus from the pinned source list: fetch, filter, deduplicate (exact and
// near, training packages first so held-out files that repeat training code are dropped), and
// split by package. Writes train.jsonl / heldout.jsonl (one file per line) and manifest.json.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Deduplicator } from './dedup';
import { fetchNpmPackage, listFiles } from './fetch';
import { type FilterReason, acceptContent, rejectPath } from './filters';
import { type CorpusLanguage, type SourceList, makePathFilter } from './sources';

export interface CorpusFile {
  /** Package name (npm) or `python-stdlib/<module>`. */
  source: string;
  path: string;
  language: CorpusLanguage;
  text: string;
}

export interface PackageSummary {
  name: string;
  version: string;
  license: string;
  language: CorpusLanguage;
  heldOut: boolean;
  files: number;
  bytes: number;
  integrity?: string;
}

export interface CorpusManifest {
  created: string;
  packages: PackageSummary[];
  excluded: Record<string, number>;
  split: Record<'train' | 'heldOut', Record<CorpusLanguage, { files: number; bytes: number }>>;
  sha256: { train: string; heldOut: string };
}

export const CORPUS_FILES = { train: 'train.jsonl', heldOut: 'heldout.jsonl', manifest: 'manifest.json' } as const;

interface Candidate {
  source: string;
  path: string;
  language: CorpusLanguage;
  bytes: Uint8Array;
}

interface Group {
  summary: PackageSummary;
  candidates: Candidate[];
  maxBytes?: number;
}

function pathOrder(p: string): string {
  return createHash('sha1').update(p).digest('hex');
}

/** The Python standard library files of the pinned Debian packages, as one group per top-level module. */
function pythonStdlibGroups(list: SourceList, log: (line: string) => void): Group[] {
  const py = list.python;
  const files: string[] = [];
  for (const pin of py.debianPackages) {
    let version: string;
    try {
      version = execFileSync('dpkg-query', ['-W', '-f', '${Version}', pin.name], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      throw new Error(
        `python stdlib: Debian package ${pin.name} is not installed (needed for the Python part of the corpus)`,
      );
    }
    if (version !== pin.version)
      log(`warning: ${pin.name} is ${version} here, the recipe pins ${pin.version}; the corpus will differ slightly`);
    const listed = execFileSync('dpkg-query', ['-L', pin.name], { encoding: 'utf8' }).split('\n');
    files.push(...listed.filter((f) => f.endsWith('.py')));
  }
  const osModule = files.find((f) => f.endsWith('/os.py'));
  if (!osModule) throw new Error("python stdlib: os.py is not among the Debian packages' files");
  const root = path.dirname(osModule);
  const keep = makePathFilter(['**/*.py'], py.exclude);
  const groups = new Map<string, Group>();
  for (const file of [...new Set(files)].sort()) {
    if (!file.startsWith(`${root}/`)) continue;
    const rel = file.slice(root.length + 1);
    if (!keep(rel) || !fs.existsSync(file)) continue;
    const module = rel.split('/')[0].replace(/\.py$/, '');
    const name = `python-stdlib/${module}`;
    let group = groups.get(name);
    if (!group) {
      group = {
        summary: {
          name,
          version: py.debianPackages[0].version,
          license: py.license,
          language: 'python',
          heldOut: py.heldOut.includes(module),
          files: 0,
          bytes: 0,
        },
        candidates: [],
      };
      groups.set(name, group);
    }
    group.candidates.push({ source: name, path: rel, language: 'python', bytes: fs.readFileSync(file) });
  }
  return [...groups.values()];
}

export async function buildCorpus(
  list: SourceList,
  cacheDir: string,
  outDir: string,
  log: (line: string) => void = () => {},
): Promise<CorpusManifest> {
  const groups: Group[] = [];
  for (const source of list.npm) {
    const fetched = fetchNpmPackage(source, cacheDir, log);
    const keep = makePathFilter(source.include, source.exclude);
    const candidates = listFiles(fetched.dir)
      .filter(keep)
      .map((p) => ({
        source: source.name,
        path: p,
        language: source.language,
        bytes: fs.readFileSync(path.join(fetched.dir, p)),
      }));
    if (candidates.length === 0)
      throw new Error(`${source.name}@${source.version}: no file matches include ${JSON.stringify(source.include)}`);
    groups.push({
      summary: {
        name: source.name,
        version: source.version,
        license: fetched.license,
        language: source.language,
        heldOut: source.heldOut === true,
        files: 0,
        bytes: 0,
        integrity: fetched.integrity,
      },
      candidates,
      maxBytes: source.maxBytes,
    });
  }
  groups.push(...pythonStdlibGroups(list, log));

  const excluded: Record<string, number> = {};
  const count = (reason: FilterReason | 'duplicate-exact' | 'duplicate-near' | 'over-package-cap'): void => {
    excluded[reason] = (excluded[reason] ?? 0) + 1;
  };
  const dedup = new Deduplicator();
  const kept: { train: CorpusFile[]; heldOut: CorpusFile[] } = { train: [], heldOut: [] };
  // Training packages first: a held-out file that repeats training code is the one dropped.
  const ordered = [...groups.filter((g) => !g.summary.heldOut), ...groups.filter((g) => g.summary.heldOut)];
  for (const group of ordered) {
    const candidates = [...group.candidates].sort((a, b) => (pathOrder(a.path) < pathOrder(b.path) ? -1 : 1));
    for (const c of candidates) {
      const byPath = rejectPath(c.path);
      if (byPath) {
        count(byPath);
        continue;
      }
      const content = acceptContent(c.bytes);
      if ('reason' in content) {
        count(content.reason);
        continue;
      }
      const bytes = Buffer.byteLength(content.text);
      if (group.maxBytes !== undefined && group.summary.bytes + bytes > group.maxBytes) {
        count('over-package-cap');
        continue;
      }
      const duplicate = dedup.offer(content.text);
      if (duplicate) {
        count(duplicate === 'exact' ? 'duplicate-exact' : 'duplicate-near');
        continue;
      }
      group.summary.files++;
      group.summary.bytes += bytes;
      (group.summary.heldOut ? kept.heldOut : kept.train).push({
        source: c.source,
        path: c.path,
        language: c.language,
        text: content.text,
      });
    }
    log(
      `corpus ${group.summary.name}: ${group.summary.files} files, ${group.summary.bytes} bytes${group.summary.heldOut ? ' (held out)' : ''}`,
    );
  }

  const emptySplit = (): Record<CorpusLanguage, { files: number; bytes: number }> => ({
    typescript: { files: 0, bytes: 0 },
    javascript: { files: 0, bytes: 0 },
    python: { files: 0, bytes: 0 },
  });
  const split = { train: emptySplit(), heldOut: emptySplit() };
  for (const key of ['train', 'heldOut'] as const) {
    for (const f of kept[key]) {
      split[key][f.language].files++;
      split[key][f.language].bytes += Buffer.byteLength(f.text);
    }
  }
  // A fixed shuffle of the training files so a run's batches mix packages and languages.
  kept.train.sort((a, b) => (pathOrder(`${a.source}/${a.path}`) < pathOrder(`${b.source}/${b.path}`) ? -1 : 1));

  fs.mkdirSync(outDir, { recursive: true });
  const write = (name: string, files: CorpusFile[]): string => {
    const text = `${files.map((f) => JSON.stringify(f)).join('\n')}\n`;
    fs.writeFileSync(path.join(outDir, name), text);
    return createHash('sha256').update(text).digest('hex');
  };
  const manifest: CorpusManifest = {
    created: new Date().toISOString(),
    packages: groups.map((g) => g.summary),
    excluded,
    split,
    sha256: { train: write(CORPUS_FILES.train, kept.train), heldOut: write(CORPUS_FILES.heldOut, kept.heldOut) },
  };
  fs.writeFileSync(path.join(outDir, CORPUS_FILES.manifest), JSON.stringify(manifest, null, 2));
  return manifest;
}

/** Reads one split written by buildCorpus. */
export function readCorpusFiles(file: string): CorpusFile[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`${path.basename(file)}: corpus split not found (run the corpus stage first)`);
  }
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((line, i) => {
      const f = JSON.parse(line) as CorpusFile;
      if (typeof f.text !== 'string' || typeof f.language !== 'string')
        throw new Error(`${path.basename(file)}:${i + 1}: not a corpus file record`);
      return f;
    });
}

export function readCorpusManifest(dir: string): CorpusManifest {
  return JSON.parse(fs.readFileSync(path.join(dir, CORPUS_FILES.manifest), 'utf8')) as CorpusManifest;
}
