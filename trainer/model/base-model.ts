import * as fs from 'node:fs';
import * as path from 'node:path';
import { SINGLE_WEIGHTS_FILE, WEIGHTS_INDEX_FILE } from './checkpoint';
import { sha256OfFiles } from '../util/sha256';

// Which base model a run uses, and its identity: the sha256 loadCheckpoint computes (of
// model.safetensors, or of the shards concatenated in file-name order), streamed here so the
// main thread never holds the weights.

/** The idiom package folder (holds models/), from source or from the bundle. */
export function packageRoot(): string | null {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (manifest.name === 'idiom') return dir;
    } catch {
      // keep looking upwards
    }
    if (path.dirname(dir) === dir) return null;
  }
}

/** --base DIR, else the embedded default model (models/), else a one-line error. */
export function resolveBaseDir(base: string | undefined): string {
  if (base) {
    const dir = path.resolve(base);
    if (!fs.existsSync(path.join(dir, 'config.json'))) throw new Error(`${dir}: not a model folder (no config.json)`);
    if (!fs.existsSync(path.join(dir, 'tokenizer.json')))
      throw new Error(`${dir}: the base model has no tokenizer.json`);
    return dir;
  }
  const root = packageRoot();
  const dir = root ? path.join(root, 'models') : null;
  if (!dir || !fs.existsSync(path.join(dir, 'config.json')))
    throw new Error('no base model: the default model (models/) is not installed; pass --base DIR');
  return dir;
}

export async function baseWeightsSha256(dir: string): Promise<string> {
  let files: string[];
  const index = path.join(dir, WEIGHTS_INDEX_FILE);
  if (fs.existsSync(path.join(dir, SINGLE_WEIGHTS_FILE))) files = [SINGLE_WEIGHTS_FILE];
  else if (fs.existsSync(index)) {
    const map =
      (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    files = [...new Set(Object.values(map))].sort();
  } else throw new Error(`${dir}: no ${SINGLE_WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE}`);
  return sha256OfFiles(files.map((file) => path.join(dir, file)));
}
