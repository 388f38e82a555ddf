// Which lines of a file changed since HEAD: review flags only those by default. The text at HEAD
// is the blob itself (git cat-file: no filter or textconv runs); the diff runs in process (the
// `diff` package), so an editor buffer with unsaved edits is compared exactly as the user sees it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { diffLines } from 'diff';
import { runGit } from '../../data/mining/git-command';

/**
 * 1-based numbers of the lines of `current` that are new or changed relative to `previous`
 * (null: the file is new, so every line is).
 */
export function changedLineNumbers(previous: string | null, current: string): number[] {
  const lineCount = current.split('\n').length;
  if (previous === null) return Array.from({ length: lineCount }, (_, i) => i + 1);
  const changed: number[] = [];
  let line = 1;
  for (const part of diffLines(previous.replace(/\r\n/g, '\n'), current.replace(/\r\n/g, '\n'))) {
    const count = part.count ?? part.value.split('\n').length - (part.value.endsWith('\n') ? 1 : 0);
    if (part.removed) continue;
    if (part.added) for (let i = 0; i < count; i++) changed.push(line + i);
    line += count;
  }
  return changed.filter((n) => n <= lineCount);
}

export interface HeadVersion {
  /** The repository's top folder. */
  root: string;
  /** The file's path relative to it ('/'-separated). */
  relativePath: string;
  /** The file's text at HEAD; null when HEAD does not have it (new, untracked) or there is no commit yet. */
  text: string | null;
}

/** The file's text at HEAD of the git repository that holds it; a one-line error outside a repository. */
export async function headVersion(file: string): Promise<HeadVersion> {
  const absolute = path.resolve(file);
  const folder = fs.existsSync(absolute) && fs.statSync(absolute).isDirectory() ? absolute : path.dirname(absolute);
  let root: string;
  try {
    root = (await runGit(folder, ['rev-parse', '--show-toplevel'])).trim();
  } catch {
    throw new Error(
      `${absolute}: not inside a git repository (review compares with HEAD and learns the repository's own distribution from its files)`,
    );
  }
  const relativePath = path.relative(fs.realpathSync(root), fs.realpathSync(absolute)).split(path.sep).join('/');
  try {
    const text = await runGit(root, ['cat-file', 'blob', `HEAD:${relativePath}`]);
    return { root, relativePath, text };
  } catch {
    return { root, relativePath, text: null }; // not in HEAD (new file) or no commits yet
  }
}
