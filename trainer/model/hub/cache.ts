// The Hugging Face hub cache layout, as huggingface_hub writes it, so a model fetched by any tool
// (huggingface-cli, transformers, Idiom) is found by all of them:
//   {cache}/models--Org--Name/blobs/{sha256 or git oid}
//   {cache}/models--Org--Name/snapshots/{commit}/{file} -> ../../blobs/{…}
//   {cache}/models--Org--Name/refs/{revision} holds the commit

import * as os from 'node:os';
import * as path from 'node:path';

/** $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (explicit) return path.resolve(explicit);
  if (env.HF_HOME) return path.resolve(env.HF_HOME, 'hub');
  const cacheHome = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(cacheHome, 'huggingface', 'hub');
}

const ID_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Checks a Hub model id (`Org/Name` or `Name`); one line naming it when it is not one. */
export function checkModelId(id: string): string {
  const parts = id.split('/');
  if (parts.length > 2 || !parts.every((part) => ID_PART.test(part) && !part.includes('..') && part.length <= 96))
    throw new Error(`"${id}" is not a Hugging Face model id (expected Org/Name, e.g. Qwen/Qwen2.5-Coder-0.5B)`);
  return id;
}

/** Checks a revision (branch, tag or commit) before it goes into a URL and a file name. */
export function checkRevision(revision: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(revision) || revision.includes('..') || revision.length > 128)
    throw new Error(`"${revision}" is not a revision (a branch, tag or commit of the model repository)`);
  return revision;
}

/** `models--Org--Name`: the folder of one model repository in the cache. */
export function repoFolderName(id: string): string {
  return `models--${checkModelId(id).split('/').join('--')}`;
}

/** `Org/Name` back from a `models--Org--Name` folder name, or null for any other folder. */
export function modelIdOfFolder(name: string): string | null {
  if (!name.startsWith('models--')) return null;
  const id = name.slice('models--'.length).split('--').join('/');
  try {
    return checkModelId(id);
  } catch {
    return null;
  }
}
