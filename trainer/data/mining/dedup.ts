// Exact and near-duplicate detection over a stream of files. The first file seen wins; later
// copies are reported with the path they duplicate. Exact: SHA-1 of the normalised text.
// Near: MinHash over 5-token shingles with LSH banding, kept if the estimated Jaccard similarity
// to an earlier file is ≥ the threshold (0.9). Written here because no npm MinHash fits a
// streaming, bounded-memory index with typed-array signatures.

import { createHash } from 'node:crypto';

export const MINHASH_PERMUTATIONS = 64; // bins of the one-permutation signature
const BANDS = 16;
const ROWS = MINHASH_PERMUTATIONS / BANDS; // P(candidate | J=0.9) = 1 - (1 - 0.9^4)^16 ≈ 1
const SHINGLE_TOKENS = 5;
// Files per LSH bucket. Boilerplate shared by thousands of small files (the same signature
// line, the same imports) would otherwise make every new file a candidate of every old one:
// quadratic. A true near-duplicate shares most of its 16 bands with its original, and those
// band values are specific to that file, so capping crowded buckets loses almost nothing.
const MAX_BUCKET = 16;
const EMPTY_BIN = 0xffffffff;

// Avalanche mix of a 32-bit integer (murmur3 finaliser).
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

function isWordChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36 || c > 127;
}

// Hashes of the text's tokens: identifier/number runs and single punctuation characters;
// whitespace separates and is otherwise ignored, so reindented copies still match.
export function tokenHashes(text: string): Uint32Array {
  const out: number[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) {
      i++;
      continue;
    }
    let h = 0x811c9dc5;
    if (isWordChar(c)) {
      while (i < n && isWordChar(text.charCodeAt(i))) {
        h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
        i++;
      }
    } else {
      h = Math.imul(h ^ c, 0x01000193);
      i++;
    }
    out.push(h >>> 0);
  }
  return Uint32Array.from(out);
}

// MinHash signature over 5-token shingles by one-permutation hashing (Li, Owen & Zhang 2012):
// each shingle is hashed once; its top 6 bits pick one of 64 bins, which keeps the smallest
// remaining 26 bits. Empty bins borrow from the next non-empty bin to the right, tagged with
// the distance (Shrivastava & Li 2014 densification). One hash per shingle instead of 64.
export function minhashSignature(text: string): Uint32Array {
  const tokens = tokenHashes(text);
  const signature = new Uint32Array(MINHASH_PERMUTATIONS).fill(EMPTY_BIN);
  const shingles = Math.max(1, tokens.length - SHINGLE_TOKENS + 1);
  for (let s = 0; s < shingles; s++) {
    let h = 0;
    const end = Math.min(tokens.length, s + SHINGLE_TOKENS);
    for (let t = s; t < end; t++) h = Math.imul(h, 0x01000193) ^ tokens[t];
    h = mix32(h >>> 0);
    const bin = h >>> 26;
    const value = h & 0x03ffffff;
    if (value < signature[bin]) signature[bin] = value;
  }
  for (let i = 0; i < MINHASH_PERMUTATIONS; i++) {
    if (signature[i] !== EMPTY_BIN) continue;
    for (let distance = 1; distance < MINHASH_PERMUTATIONS; distance++) {
      const donor = signature[(i + distance) % MINHASH_PERMUTATIONS];
      if (donor !== EMPTY_BIN && donor < 0x04000000) {
        signature[i] = donor + distance * 0x04000000;
        break;
      }
    }
  }
  return signature;
}

export function estimatedJaccard(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

export type DuplicateVerdict =
  | { kind: 'unique' }
  | { kind: 'duplicate'; of: string }
  | { kind: 'near-duplicate'; of: string; similarity: number };

export class DuplicateIndex {
  private readonly exact = new Map<string, number>();
  private readonly paths: string[] = [];
  private signatures = new Uint32Array(MINHASH_PERMUTATIONS * 1024);
  // band bucket → file number(s) in it.
  private readonly buckets = new Map<number, number | number[]>();

  constructor(private readonly threshold = 0.9) {}

  get size(): number {
    return this.paths.length;
  }

  // Checks the text against every file added so far and, if it is unique, adds it.
  check(path: string, text: string): DuplicateVerdict {
    const digest = createHash('sha1').update(text).digest('base64');
    const exactOf = this.exact.get(digest);
    if (exactOf !== undefined) return { kind: 'duplicate', of: this.paths[exactOf] };
    const signature = minhashSignature(text);
    const keys = bandKeys(signature);
    let best = -1;
    let bestSimilarity = 0;
    const seen = new Set<number>();
    for (const key of keys) {
      const bucket = this.buckets.get(key);
      if (bucket === undefined) continue;
      for (const other of typeof bucket === 'number' ? [bucket] : bucket) {
        if (seen.has(other)) continue;
        seen.add(other);
        const similarity = estimatedJaccard(signature, this.signatureOf(other));
        if (similarity > bestSimilarity || (similarity === bestSimilarity && other < best)) {
          best = other;
          bestSimilarity = similarity;
        }
      }
    }
    if (best >= 0 && bestSimilarity >= this.threshold) {
      return { kind: 'near-duplicate', of: this.paths[best], similarity: bestSimilarity };
    }
    const id = this.paths.length;
    this.paths.push(path);
    this.exact.set(digest, id);
    if ((id + 1) * MINHASH_PERMUTATIONS > this.signatures.length) {
      const grown = new Uint32Array(this.signatures.length * 2);
      grown.set(this.signatures);
      this.signatures = grown;
    }
    this.signatures.set(signature, id * MINHASH_PERMUTATIONS);
    for (const key of keys) {
      const bucket = this.buckets.get(key);
      if (bucket === undefined) this.buckets.set(key, id);
      else if (typeof bucket === 'number') this.buckets.set(key, [bucket, id]);
      else if (bucket.length < MAX_BUCKET) bucket.push(id);
    }
    return { kind: 'unique' };
  }

  private signatureOf(id: number): Uint32Array {
    return this.signatures.subarray(id * MINHASH_PERMUTATIONS, (id + 1) * MINHASH_PERMUTATIONS);
  }
}

function bandKeys(signature: Uint32Array): number[] {
  const keys: number[] = [];
  for (let band = 0; band < BANDS; band++) {
    let h = mix32(band + 1);
    for (let r = 0; r < ROWS; r++) h = mix32((h ^ signature[band * ROWS + r]) >>> 0);
    keys.push(h);
  }
  return keys;
}
