// Exact and near-duplicate detection for corpus files. Exact: sha256 of the text with trailing
// whitespace and blank lines dropped. Near: MinHash over 5-word shingles with LSH banding
// (16 bands × 4 rows), confirmed by the signature's estimated Jaccard similarity.
// Not mining's DuplicateIndex: that one keeps one more file of this corpus (a 7-line stdlib shim),
// which would change the recipe the shipped model was trained on.

import { createHash } from 'node:crypto';

export const MINHASH_SIZE = 64;
const BANDS = 16;
const ROWS = MINHASH_SIZE / BANDS;
const SHINGLE_WORDS = 5;

export function exactKey(text: string): string {
  const normalized = text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.length > 0)
    .join('\n');
  return createHash('sha256').update(normalized).digest('hex');
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

const SEEDS = Array.from({ length: MINHASH_SIZE }, (_, i) => mix32(0x9e3779b9 + i * 0x632be5ab));

export function minHash(text: string): Uint32Array {
  const words = text.match(/[A-Za-z_$][A-Za-z0-9_$]*|\d+|[^\sA-Za-z0-9_$]/g) ?? [];
  const signature = new Uint32Array(MINHASH_SIZE).fill(0xffffffff);
  const count = Math.max(1, words.length - SHINGLE_WORDS + 1);
  for (let i = 0; i < count; i++) {
    const shingle = fnv1a(words.slice(i, i + SHINGLE_WORDS).join(' '));
    for (let k = 0; k < MINHASH_SIZE; k++) {
      const h = mix32(shingle ^ SEEDS[k]);
      if (h < signature[k]) signature[k] = h;
    }
  }
  return signature;
}

export function estimatedJaccard(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let k = 0; k < a.length; k++) if (a[k] === b[k]) same++;
  return same / a.length;
}

/** Keeps the first of each group of exact or near duplicates, in the order items are offered. */
export class Deduplicator {
  private readonly exact = new Set<string>();
  private readonly buckets = new Map<string, number[]>();
  private readonly signatures: Uint32Array[] = [];

  constructor(readonly threshold = 0.85) {}

  /** 'exact' or 'near' when `text` duplicates something already kept; otherwise keeps it and returns null. */
  offer(text: string): 'exact' | 'near' | null {
    const key = exactKey(text);
    if (this.exact.has(key)) return 'exact';
    const signature = minHash(text);
    const bandKeys: string[] = [];
    const candidates = new Set<number>();
    for (let b = 0; b < BANDS; b++) {
      const bandKey = `${b}:${Array.from(signature.subarray(b * ROWS, (b + 1) * ROWS)).join(',')}`;
      bandKeys.push(bandKey);
      for (const id of this.buckets.get(bandKey) ?? []) candidates.add(id);
    }
    for (const id of candidates) {
      if (estimatedJaccard(signature, this.signatures[id]) >= this.threshold) return 'near';
    }
    this.exact.add(key);
    const id = this.signatures.length;
    this.signatures.push(signature);
    for (const bandKey of bandKeys) {
      const bucket = this.buckets.get(bandKey);
      if (bucket) bucket.push(id);
      else this.buckets.set(bandKey, [id]);
    }
    return null;
  }
}
