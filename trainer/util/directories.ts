import * as fs from 'node:fs';
import * as path from 'node:path';

// Folder creation that fails with one line instead of hanging: Node 20's recursive mkdir (sync
// and async) spins at 100% CPU forever where the parent cannot hold folders (`/proc/nope/x`), and
// a spinning main thread never runs a signal handler. So the nearest existing ancestor is found
// first, and the missing levels are made one at a time without `recursive`.

function statOrNull(at: string): fs.Stats | null {
  try {
    return fs.statSync(at);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new Error(`cannot read ${at} (${code ?? String(error)})`);
  }
}

/** Creates `dir` and its missing parents; an existing folder is fine. */
export function makeDirectory(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; ) {
    const stats = statOrNull(at);
    if (stats) {
      if (!stats.isDirectory()) throw new Error(`cannot create ${path.resolve(dir)}: ${at} is not a folder`);
      break;
    }
    missing.push(at);
    const parent = path.dirname(at);
    if (parent === at) break;
    at = parent;
  }
  for (const level of missing.reverse()) {
    try {
      fs.mkdirSync(level);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw new Error(`cannot create folder ${level} (${code ?? String(error)})`);
    }
  }
}

/**
 * Checks an output file path before anything is written: not an existing folder, and its folder
 * exists or can be made. `option` names the flag in the message (`--out`).
 */
export function prepareOutputFile(file: string, option = 'the output'): void {
  const resolved = path.resolve(file);
  if (statOrNull(resolved)?.isDirectory()) {
    throw new Error(`${option} ${file} is a folder: give the path of a file (in it, or elsewhere)`);
  }
  makeDirectory(path.dirname(resolved));
}

/**
 * Removes `dir` and the folders under it when they hold no file (deepest first); a folder with a
 * file stays, links are never followed, and no file is ever removed.
 */
export function removeEmptyFolders(dir: string): void {
  let stats: fs.Stats;
  try {
    stats = fs.lstatSync(dir);
  } catch {
    return;
  }
  if (!stats.isDirectory()) return;
  for (const name of fs.readdirSync(dir)) removeEmptyFolders(path.join(dir, name));
  try {
    fs.rmdirSync(dir);
  } catch {
    // not empty: something in it is worth keeping
  }
}
