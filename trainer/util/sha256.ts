import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';

// sha256 of files, read in chunks (weights run to gigabytes; a Buffer stops at 2 GiB): the
// identity of base weights, adapters and datasets in manifests.

/** Feeds `file`'s bytes into `hash`. */
export async function hashFileInto(hash: Hash, file: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })
      .on('data', (chunk) => hash.update(chunk))
      .on('error', (error: NodeJS.ErrnoException) =>
        reject(new Error(`${file}: cannot read (${error.code ?? error.message})`)),
      )
      .on('end', () => resolve());
  });
}

/** Hex sha256 of the files' bytes, one after another in the order given. */
export async function sha256OfFiles(files: readonly string[]): Promise<string> {
  const hash = createHash('sha256');
  for (const file of files) await hashFileInto(hash, file);
  return hash.digest('hex');
}

/** Hex sha256 of one file, synchronously. */
export function sha256OfFileSync(file: string): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(1 << 20);
    for (let n = fs.readSync(fd, buffer); n > 0; n = fs.readSync(fd, buffer)) hash.update(buffer.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}
