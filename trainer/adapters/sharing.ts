// Adapters shared through the repository's own git remote. `publish` commits an adapter folder
// into a ref of its own (SHARED_REF: one tree per adapter id, beside the others already published)
// without touching the work tree, the index or any branch, and pushes that ref. `fetch` brings
// the ref's adapters into the local registry, checks each against its manifest, and activates
// nothing. What arrives is untrusted: folder and file names are checked, only plain files are
// taken, the weights must hash to the manifest, and the repository memory is kept only when every
// document in it is the repository's own text at the adapter's commit.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { runGit, runGitBytes } from '../data/mining/git-command';
import { MEMORY_FILE, readMemoryFile } from '../data/memory/file';
import { assertFolder, checkWeightsHash, parseManifestText } from './folder';
import { isAdapterId, MANIFEST_FILE, type AdapterManifest } from './manifest';
import type { Registry } from './registry';
import { makeDirectory } from '../util/directories';
import { sha256OfFiles } from '../util/sha256';

export const SHARED_REF = 'refs/idiom/adapters';
export const DEFAULT_REMOTE = 'origin';

/** A published adapter folder holds a handful of small files; anything bigger is not ours. */
const MAX_SHARED_FILE_BYTES = 1 << 30;
const SAFE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A concurrent publish moves the remote ref between our fetch and push; start over this often. */
const PUBLISH_ATTEMPTS = 3;

interface TreeEntry {
  mode: string;
  type: string;
  object: string;
  name: string;
}

export interface PublishResult {
  id: string;
  remote: string;
  ref: string;
  commit: string;
  files: string[];
  bytes: number;
  /** False when the remote already had this adapter. */
  published: boolean;
  /** Why memory.jsonl.gz stayed behind, when it did. */
  memoryLeftOut?: string;
}

export interface FetchedAdapter {
  id: string;
  /** `Name <email>` of the commit that published it. */
  publishedBy: string | null;
  publishedAt: string | null;
  manifest: AdapterManifest;
  /** Why memory.jsonl.gz was dropped, when it was. */
  memoryDropped?: string;
}

export interface FetchResult {
  remote: string;
  ref: string;
  fetched: FetchedAdapter[];
  /** Already in the local registry. */
  present: string[];
  /** Refused, one line each (tampered, malformed). */
  refused: Array<{ id: string; reason: string }>;
}

async function checkRemote(root: string, remote: string): Promise<void> {
  // A name git would read as an option (--upload-pack=…) never reaches its command line.
  if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(remote)) throw new Error(`"${remote}" is not a git remote name`);
  const remotes = (await runGit(root, ['remote'])).split('\n').filter(Boolean);
  if (remotes.length === 0)
    throw new Error(`${root}: the repository has no git remote to share adapters through (add one: git remote add)`);
  if (!remotes.includes(remote))
    throw new Error(`${root}: no git remote named "${remote}" (remotes: ${remotes.join(', ')})`);
}

/** Updates the local copy of the shared ref from the remote; false when the remote has none yet. */
async function fetchSharedRef(root: string, remote: string): Promise<boolean> {
  const listed = await runGit(root, ['ls-remote', '--refs', remote, SHARED_REF], { network: true });
  if (listed.trim() === '') return false;
  await runGit(root, ['fetch', '--no-tags', '--no-write-fetch-head', remote, `+${SHARED_REF}:${SHARED_REF}`], {
    network: true,
  });
  return true;
}

async function readTree(root: string, treeish: string): Promise<TreeEntry[]> {
  const output = await runGit(root, ['ls-tree', '-z', treeish]);
  return output
    .split('\0')
    .filter(Boolean)
    .map((line) => {
      const tab = line.indexOf('\t');
      const [mode, type, object] = line.slice(0, tab).split(' ');
      return { mode, type, object, name: line.slice(tab + 1) };
    });
}

async function writeBlob(root: string, bytes: Uint8Array): Promise<string> {
  return (await runGitBytes(root, ['hash-object', '-w', '--stdin'], { input: bytes })).toString('utf8').trim();
}

async function makeTree(root: string, entries: readonly TreeEntry[]): Promise<string> {
  const input = entries.map((e) => `${e.mode} ${e.type} ${e.object}\t${e.name}\0`).join('');
  return (await runGitBytes(root, ['mktree', '-z'], { input })).toString('utf8').trim();
}

/**
 * Where memory.jsonl.gz may not travel: it must be exactly the repository's text at the adapter's
 * commit, so that nothing uncommitted leaves the machine and nothing foreign arrives. Null when it
 * is; otherwise the reason.
 */
async function memoryMismatch(root: string, dir: string, head: string | null): Promise<string | null> {
  if (head === null) return 'the adapter was trained without a commit';
  let documents: ReturnType<typeof readMemoryFile>;
  try {
    documents = readMemoryFile(dir);
  } catch (error) {
    return (error as Error).message;
  }
  if (documents === null) return null;
  try {
    await runGit(root, ['cat-file', '-e', `${head}^{commit}`]);
  } catch {
    return `commit ${head.slice(0, 12)} is not in this clone`;
  }
  for (const document of documents) {
    let text: string;
    try {
      text = (await runGitBytes(root, ['cat-file', 'blob', `${head}:${document.path}`])).toString('utf8');
    } catch {
      return `${document.path} is not in commit ${head.slice(0, 12)}`;
    }
    if (text !== document.text) return `${document.path} differs from commit ${head.slice(0, 12)}`;
  }
  return null;
}

/** Commits adapter `id` from the registry to SHARED_REF and pushes it to `remote`. */
export async function publishAdapter(
  root: string,
  registry: Registry,
  id: string,
  remote = DEFAULT_REMOTE,
): Promise<PublishResult> {
  const manifest = await registry.manifest(id);
  const dir = registry.adapterPath(id);
  assertFolder(dir);
  const actual = await sha256OfFiles(manifest.weights.files.map((file) => path.join(dir, file)));
  checkWeightsHash(dir, manifest, manifest.weights.files, actual);
  await checkRemote(root, remote);

  const names = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isFile() && SAFE_FILE_NAME.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  const memoryLeftOut = names.includes(MEMORY_FILE)
    ? await memoryMismatch(root, dir, manifest.repo.dirty ? null : manifest.repo.head)
    : null;
  const reasonLeftOut =
    memoryLeftOut === null ? undefined : manifest.repo.dirty ? 'trained on uncommitted changes' : memoryLeftOut;
  const files = names.filter((name) => name !== MEMORY_FILE || reasonLeftOut === undefined);

  for (let attempt = 1; ; attempt++) {
    const onRemote = await fetchSharedRef(root, remote);
    const existing = onRemote ? await readTree(root, SHARED_REF) : [];
    const parent = onRemote ? await refOrNull(root) : null;
    if (existing.some((entry) => entry.name === id)) {
      return { id, remote, ref: SHARED_REF, commit: parent ?? '', files, bytes: 0, published: false };
    }
    let bytes = 0;
    const entries: TreeEntry[] = [];
    for (const name of files) {
      const content = fs.readFileSync(path.join(dir, name));
      bytes += content.length;
      entries.push({ mode: '100644', type: 'blob', object: await writeBlob(root, content), name });
    }
    const tree = await makeTree(root, [
      ...existing,
      { mode: '040000', type: 'tree', object: await makeTree(root, entries), name: id },
    ]);
    const message = [
      `idiom: publish adapter ${id}`,
      '',
      `base: ${manifest.base.name} (${manifest.base.sha256.slice(0, 12)})`,
      `trained at: ${manifest.repo.head ?? '(no commit)'}${manifest.repo.dirty ? ' with uncommitted changes' : ''}`,
      `method: ${manifest.training.method}, mode: ${manifest.mode}`,
      ...(reasonLeftOut ? [`repository memory left out: ${reasonLeftOut}`] : []),
    ].join('\n');
    const commit = (
      await runGit(root, ['commit-tree', tree, ...(parent ? ['-p', parent] : []), '-F', '-'], { input: message })
    ).trim();
    await runGit(root, ['update-ref', SHARED_REF, commit]);
    try {
      await runGit(root, ['push', remote, `${SHARED_REF}:${SHARED_REF}`], { network: true });
    } catch (error) {
      // Someone published in between: our commit is not a descendant of theirs. Rebuild on theirs.
      if (attempt < PUBLISH_ATTEMPTS && /rejected|non-fast-forward|fetch first|stale/i.test((error as Error).message))
        continue;
      throw error;
    }
    return {
      id,
      remote,
      ref: SHARED_REF,
      commit,
      files,
      bytes,
      published: true,
      ...(reasonLeftOut ? { memoryLeftOut: reasonLeftOut } : {}),
    };
  }
}

async function refOrNull(root: string): Promise<string | null> {
  try {
    return (await runGit(root, ['rev-parse', '--verify', '--quiet', `${SHARED_REF}^{commit}`])).trim() || null;
  } catch {
    return null;
  }
}

/** Brings every adapter published on `remote` into `registry`; activates none of them. */
export async function fetchAdapters(root: string, registry: Registry, remote = DEFAULT_REMOTE): Promise<FetchResult> {
  await checkRemote(root, remote);
  const result: FetchResult = { remote, ref: SHARED_REF, fetched: [], present: [], refused: [] };
  if (!(await fetchSharedRef(root, remote))) return result;
  for (const entry of await readTree(root, SHARED_REF)) {
    const id = entry.name;
    if (!isAdapterId(id) || entry.type !== 'tree') {
      result.refused.push({ id, reason: `"${id}" in ${SHARED_REF} is not an adapter folder` });
      continue;
    }
    if (await registry.has(id)) {
      result.present.push(id);
      continue;
    }
    try {
      result.fetched.push(await importShared(root, registry, id, entry.object));
    } catch (error) {
      result.refused.push({ id, reason: (error as Error).message });
    }
  }
  return result;
}

async function importShared(root: string, registry: Registry, id: string, tree: string): Promise<FetchedAdapter> {
  const staging = registry.stagingPath(`fetch-${id}`);
  fs.rmSync(staging, { recursive: true, force: true });
  makeDirectory(staging);
  try {
    for (const file of await readTree(root, tree)) {
      if (file.type !== 'blob' || !/^100(644|755)$/.test(file.mode) || !SAFE_FILE_NAME.test(file.name))
        throw new Error(`adapter ${id}: "${file.name}" is not a plain file with a safe name; refused`);
      const size = Number((await runGit(root, ['cat-file', '-s', file.object])).trim());
      if (!(size <= MAX_SHARED_FILE_BYTES)) throw new Error(`adapter ${id}: ${file.name} is ${size} bytes; refused`);
      fs.writeFileSync(path.join(staging, file.name), await runGitBytes(root, ['cat-file', 'blob', file.object]));
    }
    const manifestFile = path.join(staging, MANIFEST_FILE);
    if (!fs.existsSync(manifestFile)) throw new Error(`adapter ${id}: no ${MANIFEST_FILE}; refused`);
    const manifest = parseManifestText(fs.readFileSync(manifestFile, 'utf8'), `${id}/${MANIFEST_FILE}`);
    if (manifest.id !== id) throw new Error(`adapter ${id}: its manifest names ${manifest.id}; refused`);
    const memoryDropped = fs.existsSync(path.join(staging, MEMORY_FILE))
      ? await memoryMismatch(root, staging, manifest.repo.head)
      : null;
    if (memoryDropped !== null) fs.rmSync(path.join(staging, MEMORY_FILE));
    // add() checks the weights against the manifest's sha256: a tampered adapter stops here.
    await registry.add(staging, { move: true });
    const log = (
      await runGit(root, ['log', '-1', '--diff-filter=A', '--format=%an <%ae>%x00%aI', SHARED_REF, '--', id])
    ).trim();
    const [publishedBy, publishedAt] = log ? log.split('\0') : [null, null];
    return {
      id,
      publishedBy,
      publishedAt,
      manifest,
      ...(memoryDropped !== null ? { memoryDropped } : {}),
    };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
