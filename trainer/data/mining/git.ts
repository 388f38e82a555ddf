// Reading a repository through git. Whatever its size, mining runs a fixed number of git
// processes: `ls-tree` for the files at HEAD, `ls-files -i` for tracked-but-ignored paths, one
// `log --name-status` pass for history, one `diff` for the held-out lines, and one long-lived
// `cat-file --batch` that streams the blobs. Content comes from HEAD's blobs, never the work
// tree, so a symlink is never followed and uncommitted edits never leak in. Every command runs
// through git-command.ts, so the repository's own config starts no program (fsmonitor, hooks,
// filter and diff drivers).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { firstLine, gitEnvironment, runGit, safeGitArgs } from './git-command';

export interface TreeEntry {
  path: string; // relative to the repository root, '/'-separated
  mode: string; // '100644', '100755', '120000' (symlink), '160000' (submodule)
  type: 'blob' | 'commit' | 'tree';
  oid: string;
  size: number | null; // bytes; null for submodules
}

export interface CommitRecord {
  id: string;
  time: number; // committer time, seconds since the epoch
  // Indices (into the HEAD file list given to history()) of files whose content this commit
  // changed; renames are followed, a pure rename is no change.
  files: number[];
}

export class GitRepository {
  private constructor(
    // Absolute path of the work tree's top level.
    readonly root: string,
    // The mined folder relative to root, '' or ending in '/'.
    readonly prefix: string,
    readonly head: string | null,
    readonly shallow: boolean,
  ) {}

  // Opens the git work tree that holds `folder`. A folder outside any git repository is an error:
  // Idiom mines tracked files only (so build outputs and untracked secrets stay out) and needs
  // history for the held-out split.
  static async open(folder: string): Promise<GitRepository> {
    const absolute = path.resolve(folder);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(absolute);
    } catch {
      throw new Error(`no such folder: ${folder}`);
    }
    if (!stat.isDirectory()) throw new Error(`not a folder: ${folder}`);
    let top: string;
    try {
      top = (await runGit(absolute, ['rev-parse', '--show-toplevel'])).trim();
    } catch (error) {
      const message = firstLine((error as Error).message);
      if (/not a git repository/i.test(message)) {
        throw new Error(
          `not a git repository: ${folder} (Idiom mines the files git tracks; run \`git init\` and commit first)`,
        );
      }
      throw new Error(`git cannot read ${folder}: ${message}`);
    }
    if (!top) throw new Error(`not inside a git work tree: ${folder}`);
    const root = fs.realpathSync(top);
    const relative = path.relative(root, fs.realpathSync(absolute)).split(path.sep).join('/');
    const prefix = relative === '' ? '' : `${relative}/`;
    let head: string | null = null;
    try {
      head = (await runGit(root, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}'])).trim() || null;
    } catch {
      head = null; // no commits yet
    }
    const shallow = (await runGit(root, ['rev-parse', '--is-shallow-repository'])).trim() === 'true';
    return new GitRepository(root, prefix, head, shallow);
  }

  // Files, symlinks and submodules at HEAD under the mined folder, sorted by path.
  async treeEntries(): Promise<TreeEntry[]> {
    if (!this.head) return [];
    const args = ['ls-tree', '-r', '-z', '-l', '--full-tree', this.head];
    if (this.prefix) args.push('--', this.prefix);
    const output = await runGit(this.root, args);
    const entries: TreeEntry[] = [];
    for (const record of output.split('\0')) {
      if (!record) continue;
      const tab = record.indexOf('\t');
      const [mode, type, oid, size] = record.slice(0, tab).split(/ +/);
      if (type !== 'blob' && type !== 'commit' && type !== 'tree') continue;
      entries.push({ path: record.slice(tab + 1), mode, type, oid, size: size === '-' ? null : Number(size) });
    }
    entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return entries;
  }

  // Tracked paths that git's ignore rules (.gitignore at any level, info/exclude, the global
  // excludes file) would ignore: files force-added despite a rule.
  async ignoredTrackedPaths(): Promise<Set<string>> {
    if (!this.head) return new Set();
    const output = await runGit(this.root, [
      'ls-files',
      '-z',
      '--cached',
      '--ignored',
      '--exclude-standard',
      '--full-name',
    ]);
    return new Set(output.split('\0').filter((entry) => entry.length > 0));
  }

  // The `.idiomignore` at the top of the work tree (gitignore syntax), or '' if there is none.
  readIdiomIgnore(): string {
    try {
      return fs.readFileSync(path.join(this.root, '.idiomignore'), 'utf8');
    } catch {
      return '';
    }
  }

  // One pass over history (newest first, merges skipped, renames followed back to HEAD paths).
  // `headPaths` are the files to track; `maxCommits` bounds the walk on very long histories.
  async history(headPaths: readonly string[], maxCommits: number): Promise<CommitRecord[]> {
    if (!this.head) return [];
    const alias = new Map<string, number>();
    headPaths.forEach((p, i) => alias.set(p, i));
    const commits: CommitRecord[] = [];
    const args = [
      'log',
      '--no-merges',
      '--date-order',
      `--max-count=${maxCommits}`,
      '--format=%x1e%H %ct',
      '-z',
      '--name-status',
      '-M',
      '--no-color',
      '--no-ext-diff',
      '--no-textconv',
      this.head,
    ];
    if (this.prefix) args.push('--', this.prefix);

    let current: CommitRecord | null = null;
    let status = '';
    let paths: string[] = [];
    let want = 0;
    // Names to forget once this commit is done (older commits refer to other files by them).
    let retire: string[] = [];
    const finishCommit = () => {
      for (const name of retire) alias.delete(name);
      retire = [];
    };
    const onEntry = () => {
      const code = status[0];
      if (!current) return;
      if (code === 'R') {
        const [from, to] = paths;
        const index = alias.get(to);
        if (index !== undefined) {
          if (status !== 'R100') current.files.push(index);
          retire.push(to);
          alias.set(from, index);
        }
      } else {
        const target = paths[paths.length - 1];
        const index = alias.get(target);
        if (index !== undefined) {
          current.files.push(index);
          if (code === 'A' || code === 'C') retire.push(target);
        }
      }
    };
    await streamNulTokens(this.root, args, (token) => {
      if (want === 0) {
        if (token.startsWith('\n')) token = token.slice(1);
        if (token.startsWith('\x1e')) {
          finishCommit();
          const [id, time] = token.slice(1).split(' ');
          current = { id, time: Number(time), files: [] };
          commits.push(current);
          return;
        }
        if (!token) return;
        status = token;
        paths = [];
        want = token[0] === 'R' || token[0] === 'C' ? 2 : 1;
        return;
      }
      paths.push(token);
      want--;
      if (want === 0) onEntry();
    });
    finishCommit();
    for (const commit of commits) commit.files = [...new Set(commit.files)].sort((a, b) => a - b);
    return commits;
  }

  // Lines (1-based, in HEAD's version) added or changed between `base` and HEAD, per path.
  // `base` null means everything at HEAD is new.
  async changedLines(base: string | null, wanted: ReadonlySet<string>): Promise<Map<string, number[]>> {
    const result = new Map<string, number[]>();
    if (!this.head || wanted.size === 0) return result;
    const from = base ?? (await this.emptyTree());
    const args = [
      'diff',
      '--no-color',
      '--no-ext-diff',
      '--no-textconv',
      '-M',
      '--unified=0',
      '--no-prefix',
      from,
      this.head,
    ];
    if (this.prefix) args.push('--', this.prefix);
    let file: string | null = null;
    let inHunk = false;
    let oldLeft = 0;
    let newLeft = 0;
    await streamLines(this.root, args, (line) => {
      if (inHunk) {
        if (line.startsWith('\\')) return; // "\ No newline at end of file"
        if (line.startsWith('-')) oldLeft--;
        else if (line.startsWith('+')) newLeft--;
        else {
          oldLeft--;
          newLeft--;
        }
        if (oldLeft <= 0 && newLeft <= 0) inHunk = false;
        return;
      }
      if (line.startsWith('diff --git ')) {
        file = null;
      } else if (line.startsWith('+++ ')) {
        const name = unquoteGitPath(line.slice(4));
        file = name === '/dev/null' ? null : name;
      } else if (line.startsWith('@@ ')) {
        const match = /^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@/.exec(line);
        if (!match) return;
        oldLeft = match[1] === undefined ? 1 : Number(match[1]);
        const start = Number(match[2]);
        newLeft = match[3] === undefined ? 1 : Number(match[3]);
        inHunk = oldLeft > 0 || newLeft > 0;
        if (file && wanted.has(file) && newLeft > 0) {
          let lines = result.get(file);
          if (!lines) result.set(file, (lines = []));
          for (let n = start; n < start + newLeft; n++) lines.push(n);
        }
      }
    });
    return result;
  }

  private async emptyTree(): Promise<string> {
    const output = await runGit(this.root, ['hash-object', '-t', 'tree', '--stdin'], { input: '' });
    return output.trim();
  }

  openBlobReader(): BlobReader {
    return new BlobReader(this.root);
  }
}

// Undoes git's C-style quoting of unusual path names ("a\tb", "\303\251").
/**
 * Paths added or modified between commits `since` and `head` (no renames, no textconv); null when
 * `since` is not a commit of this repository.
 */
export async function pathsChangedBetween(root: string, since: string, head: string): Promise<string[] | null> {
  try {
    await runGit(root, ['cat-file', '-e', `${since}^{commit}`]);
  } catch {
    return null;
  }
  const diff = await runGit(root, [
    'diff',
    '--name-only',
    '-z',
    '--no-renames',
    '--diff-filter=AM',
    '--no-textconv',
    '--no-ext-diff',
    since,
    head,
  ]);
  return diff.split('\0').filter((p) => p.length > 0);
}

export function unquoteGitPath(raw: string): string {
  if (!raw.startsWith('"') || !raw.endsWith('"')) return raw;
  const body = raw.slice(1, -1);
  const bytes: number[] = [];
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, '"': 34, '\\': 92, a: 7, b: 8, f: 12, v: 11 };
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch !== '\\') {
      bytes.push(...Buffer.from(ch, 'utf8'));
      continue;
    }
    const next = body[i + 1];
    if (/[0-7]/.test(next)) {
      bytes.push(parseInt(body.slice(i + 1, i + 4), 8));
      i += 3;
    } else {
      bytes.push(simple[next] ?? next.charCodeAt(0));
      i += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

// Runs git and hands each NUL-terminated token of its output to `onToken`, without holding the
// whole output in memory.
function streamNulTokens(cwd: string, args: string[], onToken: (token: string) => void): Promise<void> {
  return streamSplit(cwd, args, 0, onToken);
}

function streamLines(cwd: string, args: string[], onLine: (line: string) => void): Promise<void> {
  return streamSplit(cwd, args, 10, onLine);
}

function streamSplit(cwd: string, args: string[], separator: number, onPart: (part: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', safeGitArgs(args), { cwd, env: gitEnvironment(), stdio: ['ignore', 'pipe', 'pipe'] });
    let carry: Buffer = Buffer.alloc(0);
    const err: Buffer[] = [];
    let failed: Error | null = null;
    child.stdout.on('data', (chunk: Buffer) => {
      if (failed) return;
      const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      let start = 0;
      try {
        for (let i = data.indexOf(separator, start); i >= 0; i = data.indexOf(separator, start)) {
          onPart(data.toString('utf8', start, i));
          start = i + 1;
        }
      } catch (error) {
        failed = error as Error;
        child.kill();
        return;
      }
      carry = Buffer.from(data.subarray(start));
    });
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (error) => reject(new Error(`cannot run git: ${error.message}`)));
    child.on('close', (code) => {
      if (failed) return reject(failed);
      if (code !== 0) {
        const verb = args.find((a) => !a.startsWith('-') && !a.includes('='));
        return reject(new Error(`git ${verb} failed: ${firstLine(Buffer.concat(err).toString('utf8'))}`));
      }
      try {
        if (carry.length) onPart(carry.toString('utf8'));
      } catch (error) {
        return reject(error as Error);
      }
      resolve();
    });
  });
}

interface PendingBlob {
  resolve: (content: Buffer | null) => void;
  reject: (error: Error) => void;
}

// Streams blob contents from one `git cat-file --batch` process. Requests are answered in order.
export class BlobReader {
  private readonly child;
  private readonly pending: PendingBlob[] = [];
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expected = -1; // bytes of the current blob (+1 for its trailing newline), -1: awaiting a header
  private closed = false;
  private failure: Error | null = null;

  constructor(cwd: string) {
    this.child = spawn('git', safeGitArgs(['cat-file', '--batch']), {
      cwd,
      env: gitEnvironment(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stderr: Buffer[] = [];
    this.child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    this.child.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    this.child.on('error', (error) => this.fail(new Error(`cannot run git: ${error.message}`)));
    this.child.stdin.on('error', () => undefined); // reported through 'close'
    this.child.on('close', (code) => {
      if (!this.closed || this.pending.length > 0) {
        this.fail(
          new Error(`git cat-file stopped (exit ${code}): ${firstLine(Buffer.concat(stderr).toString('utf8'))}`),
        );
      }
    });
  }

  // The blob's bytes, or null if the object is missing.
  read(oid: string): Promise<Buffer | null> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.child.stdin.write(`${oid}\n`);
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.child.stdin.end();
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const request of this.pending.splice(0)) request.reject(error);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.expected < 0) {
        const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
        this.chunks = [all];
        const newline = all.indexOf(10);
        if (newline < 0) return;
        const header = all.toString('utf8', 0, newline);
        this.take(newline + 1);
        const request = this.pending[0];
        if (header.endsWith(' missing') || header.endsWith(' ambiguous')) {
          this.pending.shift();
          request?.resolve(null);
          continue;
        }
        const size = Number(header.slice(header.lastIndexOf(' ') + 1));
        if (!Number.isFinite(size)) {
          this.fail(new Error(`git cat-file: unexpected header ${header}`));
          return;
        }
        this.expected = size + 1;
      }
      if (this.buffered < this.expected) return;
      const body = this.take(this.expected);
      this.expected = -1;
      // Copy so the (possibly large) read buffer can be freed.
      this.pending.shift()?.resolve(Buffer.from(body.subarray(0, body.length - 1)));
    }
  }
}
