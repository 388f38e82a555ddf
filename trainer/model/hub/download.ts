// Downloads a model from the Hugging Face Hub (or a mirror with its URL layout) into the hub cache:
// only the files serving needs, resumed from a `.incomplete` file with an HTTP Range request, each
// checked against the hash the Hub lists (sha256 for LFS files, the git blob id for the others).
// The one place Idiom reaches the network, and only when a person asks for a model by name.

import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { hashFileInto } from '../../util/sha256';
import { CONFIG_FILE, WEIGHTS_INDEX_FILE } from '../checkpoint';
import { countParameters, readModelConfigFile } from '../config';
import { servingPrecision, type ServingPrecisionSetting } from '../precision';
import {
  formatBytes,
  formatParameters,
  machineMemory,
  memoryNeeded,
  memoryRefusal,
  type MachineMemory,
} from './catalog';
import { checkModelId, checkRevision, hubCacheDir, repoFolderName } from './cache';

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

const WANTED_FILES = new Set([
  CONFIG_FILE,
  'tokenizer.json',
  'tokenizer_config.json',
  'generation_config.json',
  WEIGHTS_INDEX_FILE,
]);

export interface DownloadProgress {
  file: string;
  /** Bytes of this file on disk, and its size. */
  fileBytes: number;
  fileSize: number;
  /** Bytes of every wanted file on disk, and their sum. */
  bytes: number;
  total: number;
}

export interface DownloadOptions {
  /** The Hub's base URL; '' turns downloads off. */
  endpoint: string;
  revision?: string;
  cacheDir?: string;
  signal?: AbortSignal;
  onProgress?: (progress: DownloadProgress) => void;
  /** What the download is refused against before the weights are fetched. */
  memory?: MachineMemory;
  /** idiom.precision: the memory check assumes the precision it resolves to for this model. Default auto. */
  precision?: ServingPrecisionSetting;
}

export interface DownloadResult {
  id: string;
  /** The commit the revision resolved to (the snapshot folder's name). */
  commit: string;
  /** The snapshot folder: a model folder for idiom.baseModelPath or --base. */
  path: string;
  files: string[];
  /** Bytes fetched by this call (less than the total after a resume or for files already cached). */
  fetched: number;
  /** Files continued from a `.incomplete` download. */
  resumed: string[];
}

interface RemoteFile {
  name: string;
  size: number;
  /** The blob's name in the cache: the LFS sha256, else the git blob id (sha1). */
  blob: string;
  sha256: string | null;
  gitOid: string | null;
}

/** Downloads model `id` into the hub cache; one clear line on any failure, partial files kept for a resume. */
export async function downloadModel(id: string, options: DownloadOptions): Promise<DownloadResult> {
  checkModelId(id);
  const endpoint = checkEndpoint(options.endpoint);
  const revision = checkRevision(options.revision ?? 'main');
  const repoDir = path.join(options.cacheDir ?? hubCacheDir(), repoFolderName(id));
  const get = (url: string, init: RequestInit = {}) => request(url, init, options.signal, id, endpoint);

  const info = (await (await get(`${endpoint}/api/models/${id}/revision/${encodeURIComponent(revision)}`)).json()) as {
    sha?: unknown;
    siblings?: Array<{ rfilename?: unknown }>;
  };
  const commit = typeof info.sha === 'string' && /^[0-9a-f]{40}$/.test(info.sha) ? info.sha : null;
  if (!commit) throw new Error(`${endpoint}: the revision answer for ${id} has no commit sha`);
  const siblings = new Set(
    (info.siblings ?? []).map((s) => s.rfilename).filter((n): n is string => typeof n === 'string'),
  );
  const files = (await listTree(get, `${endpoint}/api/models/${id}/tree/${commit}`)).filter(
    (file) => siblings.has(file.name) && (WANTED_FILES.has(file.name) || /^[\w.-]+\.safetensors$/.test(file.name)),
  );
  if (!files.some((file) => file.name === CONFIG_FILE)) throw new Error(`${id} has no ${CONFIG_FILE}`);
  if (!files.some((file) => file.name.endsWith('.safetensors')))
    throw new Error(`${id} has no .safetensors weights (Idiom reads safetensors only)`);
  files.sort((a, b) => Number(b.name === CONFIG_FILE) - Number(a.name === CONFIG_FILE));

  const blobs = path.join(repoDir, 'blobs');
  const snapshot = path.join(repoDir, 'snapshots', commit);
  fs.mkdirSync(blobs, { recursive: true });
  fs.mkdirSync(snapshot, { recursive: true });
  const total = files.reduce((sum, file) => sum + file.size, 0);
  const onDisk = new Map(files.map((file) => [file.name, sizeOf(path.join(blobs, file.blob))]));
  const report = (file: RemoteFile, fileBytes: number) => {
    onDisk.set(file.name, fileBytes);
    let bytes = 0;
    for (const size of onDisk.values()) bytes += size;
    options.onProgress?.({ file: file.name, fileBytes, fileSize: file.size, bytes, total });
  };

  const missing = files.reduce(
    (sum, file) => sum + file.size - (onDisk.get(file.name) === file.size ? file.size : 0),
    0,
  );
  const free = freeDiskBytes(blobs);
  if (free !== null && free < missing)
    throw new Error(`${formatBytes(missing)} to download but only ${formatBytes(free)} free on the disk of ${blobs}`);

  let fetched = 0;
  const resumed: string[] = [];
  for (const file of files) {
    const blob = path.join(blobs, file.blob);
    if (sizeOf(blob) !== file.size) {
      const result = await fetchBlob(
        get,
        `${endpoint}/${id}/resolve/${commit}/${encodeURIComponent(file.name)}`,
        file,
        blob,
        report,
      );
      fetched += result.fetched;
      if (result.resumed) resumed.push(file.name);
    }
    link(blob, path.join(snapshot, file.name));
    report(file, file.size);
    if (file.name === CONFIG_FILE) refuseWhatWontFit(snapshot, files, options);
  }
  if (revision !== commit) {
    fs.mkdirSync(path.dirname(path.join(repoDir, 'refs', revision)), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', revision), commit);
  }
  return { id, commit, path: snapshot, files: files.map((file) => file.name), fetched, resumed };
}

function checkEndpoint(endpoint: string): string {
  const trimmed = endpoint.trim().replace(/\/+$/, '');
  if (trimmed === '') throw new Error('model downloads are turned off (no Hugging Face Hub endpoint is set)');
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new Error(`"${endpoint}" is not a Hub endpoint URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new Error(`"${endpoint}" is not a Hub endpoint URL (http or https)`);
  return trimmed;
}

type Get = (url: string, init?: RequestInit) => Promise<Response>;

async function request(
  url: string,
  init: RequestInit,
  signal: AbortSignal | undefined,
  id: string,
  endpoint: string,
): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, signal });
  } catch (error) {
    if (signal?.aborted) throw new Error('download cancelled; run it again to resume');
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`cannot reach ${endpoint} (${cause?.code ?? cause?.message ?? (error as Error).message})`);
  }
  if (response.ok) return response;
  await response.body?.cancel().catch(() => undefined);
  if (response.status === 401 || response.status === 403)
    throw new Error(
      `${id} needs a Hugging Face login (gated or private), which Idiom does not handle; download it with huggingface-cli and choose its folder`,
    );
  if (response.status === 404) throw new Error(`${id} (or that revision) is not on ${endpoint}`);
  throw new Error(`${endpoint} answered ${response.status} ${response.statusText} for ${url.slice(endpoint.length)}`);
}

/** The tree listing of the repository root, following the Hub's `Link: <…>; rel="next"` pages. */
async function listTree(get: Get, first: string): Promise<RemoteFile[]> {
  const files: RemoteFile[] = [];
  for (let url: string | null = first, pages = 0; url !== null && pages < 100; pages++) {
    const response = await get(url);
    const entries = (await response.json()) as unknown;
    if (!Array.isArray(entries)) throw new Error(`${first}: the tree answer is not a list`);
    for (const entry of entries as Array<Record<string, unknown>>) {
      if (entry.type !== 'file' || typeof entry.path !== 'string' || typeof entry.size !== 'number') continue;
      const lfs = entry.lfs as { oid?: unknown; size?: unknown } | undefined;
      const sha256 = typeof lfs?.oid === 'string' && /^[0-9a-f]{64}$/.test(lfs.oid) ? lfs.oid : null;
      const gitOid = typeof entry.oid === 'string' && /^[0-9a-f]{40}$/.test(entry.oid) ? entry.oid : null;
      const blob = sha256 ?? gitOid;
      if (!blob) continue;
      const size = sha256 && typeof lfs?.size === 'number' ? lfs.size : entry.size;
      files.push({ name: entry.path, size, blob, sha256, gitOid: sha256 ? null : gitOid });
    }
    const next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get('link') ?? '')?.[1] ?? null;
    url = next ? new URL(next, first).toString() : null;
  }
  return files;
}

/** Fetches one file into `blob`, continuing `blob.incomplete` when there is one. */
async function fetchBlob(
  get: Get,
  url: string,
  file: RemoteFile,
  blob: string,
  report: (file: RemoteFile, bytes: number) => void,
): Promise<{ fetched: number; resumed: boolean }> {
  const partial = `${blob}.incomplete`;
  let start = sizeOf(partial);
  if (start > file.size) {
    fs.rmSync(partial, { force: true });
    start = 0;
  }
  if (start === file.size && start > 0) {
    const whole = createHash(file.sha256 ? 'sha256' : 'sha1');
    if (!file.sha256) whole.update(`blob ${file.size}\0`);
    await hashFileInto(whole, partial);
    checkHash(file, whole, partial);
    fs.renameSync(partial, blob);
    return { fetched: 0, resumed: true };
  }
  const headers: Record<string, string> = start > 0 ? { Range: `bytes=${start}-` } : {};
  const response = await get(url, { headers });
  if (start > 0 && response.status !== 206) start = 0; // the server sent the whole file
  const hash = createHash(file.sha256 ? 'sha256' : 'sha1');
  if (!file.sha256) hash.update(`blob ${file.size}\0`);
  if (start > 0) await hashFileInto(hash, partial);
  const out = await fs.promises.open(partial, start > 0 ? 'a' : 'w');
  let bytes = start;
  try {
    if (!response.body) throw new Error('empty answer');
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      if (bytes + chunk.length > file.size) throw new Error(`more than the ${file.size} bytes the Hub lists`);
      await out.write(chunk);
      hash.update(chunk);
      bytes += chunk.length;
      report(file, bytes);
    }
  } catch (error) {
    await out.close();
    if ((error as Error).name === 'AbortError')
      throw new Error(
        `download of ${file.name} cancelled at ${formatBytes(bytes)} of ${formatBytes(file.size)}; run it again to resume`,
      );
    throw new Error(
      `download of ${file.name} interrupted at ${formatBytes(bytes)} of ${formatBytes(file.size)} (${(error as Error).message}); run it again to resume`,
    );
  }
  await out.close();
  if (bytes !== file.size)
    throw new Error(
      `download of ${file.name} interrupted at ${formatBytes(bytes)} of ${formatBytes(file.size)}; run it again to resume`,
    );
  checkHash(file, hash, partial);
  fs.renameSync(partial, blob);
  return { fetched: bytes - start, resumed: start > 0 };
}

function checkHash(file: RemoteFile, hash: Hash, partial: string): void {
  const actual = hash.digest('hex');
  const expected = file.sha256 ?? file.gitOid;
  if (actual === expected) return;
  // A resume would only extend the bad bytes: the partial file goes.
  fs.rmSync(partial, { force: true });
  throw new Error(
    `${file.name}: ${file.sha256 ? 'sha256' : 'git blob id'} ${actual} does not match the Hub's ${expected}; the download is discarded`,
  );
}

/** After config.json: refuses a model this machine cannot hold at its serving precision, before any weights are fetched. */
function refuseWhatWontFit(snapshot: string, files: RemoteFile[], options: DownloadOptions): void {
  const setting = options.precision ?? 'auto';
  const weightBytes = files.filter((file) => file.name.endsWith('.safetensors')).reduce((sum, f) => sum + f.size, 0);
  let parameters: number;
  let config = null;
  try {
    config = readModelConfigFile(path.join(snapshot, CONFIG_FILE));
    parameters = countParameters(config);
  } catch {
    parameters = weightBytes / 2; // an architecture Idiom does not read: assume 16-bit weights
  }
  const precision = servingPrecision(setting, parameters);
  const assumed =
    setting === 'auto'
      ? `at ${precision} (precision auto, ${formatParameters(parameters)} parameters)`
      : `at ${precision}`;
  const refusal = memoryRefusal(
    memoryNeeded(parameters, config, precision),
    options.memory ?? machineMemory(),
    `${assumed} this model`,
  );
  if (refusal) throw new Error(`${refusal}; not downloading its weights`);
}

function freeDiskBytes(dir: string): number | null {
  try {
    const stats = fs.statfsSync(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return null;
  }
}

/** snapshots/{commit}/{file} -> ../../blobs/{blob}, as huggingface_hub links them; a copy where links fail. */
function link(blob: string, target: string): void {
  fs.rmSync(target, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(target), blob), target);
  } catch {
    fs.copyFileSync(blob, target);
  }
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}
