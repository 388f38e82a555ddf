// The pinned corpus recipe (sources.json): which npm packages and which Python standard-library
// files the default model is pretrained on, which are held out, and the license rules.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type CorpusLanguage = 'typescript' | 'javascript' | 'python';
export const CORPUS_LANGUAGES: readonly CorpusLanguage[] = ['typescript', 'javascript', 'python'];

export interface NpmSource {
  name: string;
  version: string;
  language: CorpusLanguage;
  /** Globs relative to the package root (`**` any folders, `*` within one name). */
  include: string[];
  exclude?: string[];
  /** Files are taken in a fixed pseudo-random order until this many bytes. */
  maxBytes?: number;
  heldOut?: boolean;
  /** npm's integrity string of the tarball; checked on every fetch when present. */
  integrity?: string;
}

export interface DebianPackagePin {
  name: string;
  version: string;
}

export interface PythonStdlibSource {
  license: string;
  debianPackages: DebianPackagePin[];
  exclude: string[];
  /** Top-level modules or packages held out whole. */
  heldOut: string[];
  maxBytes?: number;
}

export interface SourceList {
  npm: NpmSource[];
  python: PythonStdlibSource;
}

export const SOURCES_FILE = path.join(__dirname, 'sources.json');

/** SPDX identifiers accepted as permissive. */
export const PERMISSIVE_LICENSES: readonly string[] = [
  'MIT',
  'Apache-2.0',
  'BSD-2-Clause',
  'BSD-3-Clause',
  'ISC',
  '0BSD',
  'PSF-2.0',
  'Python-2.0',
];

/**
 * Whether an SPDX license expression from package.json is permissive: every AND operand and at
 * least one OR alternative must be in PERMISSIVE_LICENSES. Old object forms ({type}) are accepted.
 */
export function isPermissiveLicense(license: unknown): boolean {
  if (license && typeof license === 'object' && !Array.isArray(license)) {
    return isPermissiveLicense((license as { type?: unknown }).type);
  }
  if (typeof license !== 'string' || license.trim() === '') return false;
  const expression = license.trim().replace(/^\((.*)\)$/, '$1');
  const alternatives = expression.split(/\s+OR\s+/i);
  return alternatives.some((alternative) =>
    alternative
      .replace(/[()]/g, '')
      .split(/\s+AND\s+/i)
      .every((id) => PERMISSIVE_LICENSES.includes(id.trim())),
  );
}

/** `**` matches any number of folders, `*` anything but '/', `?` one character. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      // "**/" matches zero or more folders; a trailing "**" matches everything below.
      if (glob[i + 2] === '/') {
        out += '(?:.*/)?';
        i += 2;
      } else {
        out += '.*';
        i += 1;
      }
    } else if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

export function makePathFilter(
  include: readonly string[],
  exclude: readonly string[] = [],
): (relativePath: string) => boolean {
  const includes = include.map(globToRegExp);
  const excludes = exclude.map(globToRegExp);
  return (p) => includes.some((r) => r.test(p)) && !excludes.some((r) => r.test(p));
}

/** Loads and validates the source list; one clear error per problem. */
export function loadSourceList(file = SOURCES_FILE): SourceList {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`${path.basename(file)}: cannot read the source list (${(error as Error).message})`);
  }
  return parseSourceList(raw, path.basename(file));
}

export function parseSourceList(raw: unknown, source = 'sources.json'): SourceList {
  const fail = (message: string): never => {
    throw new Error(`${source}: ${message}`);
  };
  if (!raw || typeof raw !== 'object') fail('must be a JSON object');
  const obj = raw as Record<string, unknown>;
  if (!Array.isArray(obj.npm)) fail('"npm" must be a list');
  const seen = new Set<string>();
  const npm = (obj.npm as unknown[]).map((entry, i): NpmSource => {
    const e = entry as Record<string, unknown>;
    const where = `npm[${i}]`;
    if (!e || typeof e !== 'object') fail(`${where} must be an object`);
    if (typeof e.name !== 'string' || !/^(@[a-z0-9._-]+\/)?[a-z0-9._-]+$/.test(e.name))
      fail(`${where}.name must be an npm package name`);
    if (typeof e.version !== 'string' || !/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(e.version))
      fail(`${where}.version must be an exact version`);
    if (!CORPUS_LANGUAGES.includes(e.language as CorpusLanguage))
      fail(`${where}.language must be one of ${CORPUS_LANGUAGES.join(', ')}`);
    const globs = (key: string, required: boolean): string[] | undefined => {
      const v = e[key];
      if (v === undefined && !required) return undefined;
      if (!Array.isArray(v) || v.length === 0 || !v.every((g) => typeof g === 'string' && g.length > 0))
        fail(`${where}.${key} must be a non-empty list of globs`);
      return v as string[];
    };
    if (seen.has(e.name as string)) fail(`${where}: package ${e.name} is listed twice`);
    seen.add(e.name as string);
    if (e.maxBytes !== undefined && !(Number.isSafeInteger(e.maxBytes) && (e.maxBytes as number) > 0))
      fail(`${where}.maxBytes must be a positive integer`);
    if (e.integrity !== undefined && typeof e.integrity !== 'string') fail(`${where}.integrity must be a string`);
    return {
      name: e.name as string,
      version: e.version as string,
      language: e.language as CorpusLanguage,
      include: globs('include', true)!,
      exclude: globs('exclude', false),
      maxBytes: e.maxBytes as number | undefined,
      heldOut: e.heldOut === true,
      integrity: e.integrity as string | undefined,
    };
  });
  const py = obj.python as Record<string, unknown>;
  if (!py || typeof py !== 'object') fail('"python" must be an object');
  if (!isPermissiveLicense(py.license))
    fail(`python.license ${JSON.stringify(py.license)} is not a permissive license`);
  if (!Array.isArray(py.debianPackages) || py.debianPackages.length === 0)
    fail('python.debianPackages must be a non-empty list');
  const debianPackages = (py.debianPackages as unknown[]).map((p, i) => {
    const d = p as Record<string, unknown>;
    if (!d || typeof d.name !== 'string' || typeof d.version !== 'string')
      fail(`python.debianPackages[${i}] needs name and version strings`);
    return { name: d.name as string, version: d.version as string };
  });
  const strings = (v: unknown, key: string): string[] => {
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
      return fail(`python.${key} must be a list of strings`);
    return v as string[];
  };
  return {
    npm,
    python: {
      license: py.license as string,
      debianPackages,
      exclude: strings(py.exclude ?? [], 'exclude'),
      heldOut: strings(py.heldOut ?? [], 'heldOut'),
      maxBytes: py.maxBytes as number | undefined,
    },
  };
}
