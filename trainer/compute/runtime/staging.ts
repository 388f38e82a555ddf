import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

// The temporary folders a session's weights are staged in for ONNX Runtime to map. Each is named
// after the process that made it, so a later process can tell the folders of a process that was
// killed mid-load (never removed) from those of one still loading, and remove only the former.

const PREFIX = 'idiom-session-';
const NAME = /^idiom-session-(\d+)-[A-Za-z0-9]+$/;

let swept = false;

/** A fresh staging folder of this process; the first call also removes folders of dead processes. */
export function makeStagingFolder(): string {
  if (!swept) {
    swept = true;
    removeStaleStagingFolders();
  }
  return fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}${process.pid}-`));
}

/** Removes the staging folders in the temp folder whose process is gone; returns their paths. */
export function removeStaleStagingFolders(tempDir = os.tmpdir()): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(tempDir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const pid = NAME.exec(name)?.[1];
    if (pid === undefined || isRunning(Number(pid))) continue;
    const dir = path.join(tempDir, name);
    try {
      const stat = fs.lstatSync(dir);
      // Another user's folder, or a link planted under our name, is not ours to remove.
      if (!stat.isDirectory() || (typeof process.getuid === 'function' && stat.uid !== process.getuid())) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // Gone already, or not removable: it costs nothing to leave it.
    }
  }
  return removed;
}

function isRunning(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists under another user.
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** One line for a write into a staging folder that failed because its disk is full; else the error as it is. */
export function stagingWriteError(error: unknown, dir: string, written: number): Error {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return error as Error;
  const megabytes = Math.round(written / 1e6);
  return new Error(
    `no space left in ${path.dirname(dir)} to stage the model's weights for ONNX Runtime (disk full after ${megabytes} MB); free space there or set TMPDIR to a folder on a larger disk`,
  );
}
