// What every adapter folder shares, LoRA or full: it appears whole or not at all (written into a
// hidden sibling, then renamed), and it carries a manifest.json whose weights hash is checked
// against the bytes on disk.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomically } from '../model/safetensors';
import { MANIFEST_FILE, parseManifest, type AdapterManifest } from './manifest';
import { makeDirectory } from '../util/directories';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** PEFT's older pickle format; refused (a pickle can run code on load). */
export const ADAPTER_PICKLE_FILE = 'adapter_model.bin';
export const FULL_CONFIG_FILE = 'config.json';
export const FULL_WEIGHTS_FILE = 'model.safetensors';
export const FULL_WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

export type AdapterKind = 'lora' | 'full';

/** 'lora' (adapter_config.json), 'full' (config.json + model weights), or a one-line error. */
export function adapterKind(dir: string): AdapterKind {
  assertFolder(dir);
  if (fs.existsSync(path.join(dir, ADAPTER_CONFIG_FILE))) return 'lora';
  if (
    fs.existsSync(path.join(dir, FULL_CONFIG_FILE)) &&
    (fs.existsSync(path.join(dir, FULL_WEIGHTS_FILE)) || fs.existsSync(path.join(dir, FULL_WEIGHTS_INDEX_FILE)))
  ) {
    return 'full';
  }
  throw new Error(
    `${dir}: not an adapter folder (no ${ADAPTER_CONFIG_FILE}, and no ${FULL_CONFIG_FILE} with ${FULL_WEIGHTS_FILE})`,
  );
}

export function assertFolder(dir: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch (error) {
    throw new Error(`${dir}: no such adapter folder (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  if (!stat.isDirectory()) throw new Error(`${dir}: not a folder`);
}

/** Reads and validates dir/manifest.json; null when the folder has none (e.g. a PEFT adapter made elsewhere). */
export function readManifest(dir: string): AdapterManifest | null {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${file}: cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  return parseManifestText(text, file);
}

export function parseManifestText(text: string, file: string): AdapterManifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}: invalid JSON (${(error as Error).message})`);
  }
  return parseManifest(json, file);
}

export function checkBaseHash(dir: string, manifest: AdapterManifest | null, baseSha256: string | undefined): void {
  if (!manifest || baseSha256 === undefined) return;
  if (manifest.base.sha256 !== baseSha256) {
    throw new Error(
      `${dir}: adapter ${manifest.id} was trained on base "${manifest.base.name}" with weights sha256 ${manifest.base.sha256.slice(0, 12)}…, ` +
        `but the loaded base has sha256 ${baseSha256.slice(0, 12)}… (wrong base model)`,
    );
  }
}

export function checkWeightsHash(dir: string, manifest: AdapterManifest | null, files: string[], sha256: string): void {
  if (!manifest) return;
  const listed = manifest.weights.files.join(', ');
  if (listed !== files.join(', ')) {
    throw new Error(`${dir}: manifest lists weight files [${listed}] but the folder holds [${files.join(', ')}]`);
  }
  if (manifest.weights.sha256 !== sha256) {
    throw new Error(
      `${dir}: weights sha256 ${sha256.slice(0, 12)}… does not match manifest.json (${manifest.weights.sha256.slice(0, 12)}…): the weights changed or are corrupt`,
    );
  }
}

/**
 * Creates `dir` whole: `fill` writes into a hidden temp folder beside it, which is then fsynced and
 * renamed to `dir`. A crash leaves at most a `.NAME.tmp-*` folder, never a half-written `dir`.
 */
export async function writeFolderAtomically(dir: string, fill: (tempDir: string) => Promise<void>): Promise<void> {
  const parent = path.dirname(path.resolve(dir));
  const temp = path.join(parent, `.${path.basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  if (fs.existsSync(dir)) throw new Error(`${dir}: already exists; an adapter folder is written once`);
  makeDirectory(parent);
  await fs.promises.mkdir(temp);
  try {
    await fill(temp);
    fsyncPath(temp);
    if (fs.existsSync(dir)) throw new Error(`${dir}: already exists; an adapter folder is written once`);
    await fs.promises.rename(temp, dir);
    fsyncPath(parent);
  } catch (error) {
    await fs.promises.rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/** Makes a rename or a new file durable: fsync of the file or folder itself. */
export function fsyncPath(target: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(target, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on folders; the rename is still atomic there.
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** Writes a small text file through temp + fsync + rename. */
export function writeTextAtomically(file: string, text: string): void {
  writeFileAtomically(file, [new TextEncoder().encode(text)]);
}
