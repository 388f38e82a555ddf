import { Rng } from '../../model/random';

// Training rows from dataset examples: each epoch visits the examples in a seeded order and packs
// them, whole, into rows of T + 1 tokens (inputs + the last target) by first fit over the last
// OPEN_ROWS rows still open (on this repository at T = 512, next fit filled 81% of the token
// slots, first fit 90%). An example never spans two rows; its first token is not a
// target (it would be predicted from another example); FIM examples count only from their middle
// (lossStart). The rest of a row is padding, masked. The order is a pure function of (seed,
// epoch), so a resumed run needs only its data cursor. trainer/training/torch/batches.py mirrors this.

/** Rows that may still take examples; the oldest is closed when one more is opened. */
export const OPEN_ROWS = 64;

export interface TrainExample {
  tokens: Int32Array;
  lossStart: number;
}

export interface DataCursor {
  epoch: number;
  /** Next row of the epoch. */
  row: number;
}

export interface TrainingRows {
  /** [B, T + 1] */
  tokens: Int32Array;
  /** [B, T]: mask[b, t] weighs the target tokens[b, t + 1]. */
  lossMask: Float32Array;
  /** Targets that count. */
  targets: number;
}

/** Example indices of each row of `epoch`. */
export function packEpoch(
  examples: readonly TrainExample[],
  rowTokens: number,
  seed: number,
  epoch: number,
): number[][] {
  const order = Array.from({ length: examples.length }, (_, i) => i);
  // Fisher–Yates with a generator per (seed, epoch): no state to carry across a resume.
  const rng = new Rng((seed * 1_000_003 + epoch * 7919 + 17) >>> 0);
  for (let i = order.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const rows: number[][] = [];
  const open: { indices: number[]; used: number }[] = [];
  for (const index of order) {
    const length = Math.min(examples[index].tokens.length, rowTokens);
    if (length < 2) continue;
    let at = open.findIndex((row) => row.used + length <= rowTokens);
    if (at < 0) {
      if (open.length === OPEN_ROWS) rows.push(open.shift()!.indices);
      at = open.push({ indices: [], used: 0 }) - 1;
    }
    const row = open[at];
    row.indices.push(index);
    row.used += length;
    // A row with room for less than the shortest example (2 tokens) is full.
    if (rowTokens - row.used < 2) rows.push(open.splice(at, 1)[0].indices);
  }
  for (const row of open) rows.push(row.indices);
  return rows;
}

/** The tokens and loss mask of B rows (missing rows, past the epoch's end, are all padding). */
export function fillRows(
  examples: readonly TrainExample[],
  rows: readonly (readonly number[])[],
  batch: number,
  seqLen: number,
  padId: number,
): TrainingRows {
  const width = seqLen + 1;
  const tokens = new Int32Array(batch * width).fill(padId);
  const lossMask = new Float32Array(batch * seqLen);
  let targets = 0;
  rows.slice(0, batch).forEach((row, b) => {
    let offset = 0;
    for (const index of row) {
      const example = examples[index];
      const length = Math.min(example.tokens.length, width - offset);
      tokens.set(example.tokens.subarray(0, length), b * width + offset);
      for (let j = Math.max(1, example.lossStart); j < length; j++) {
        // Target at row position offset + j is predicted at input position offset + j − 1.
        lossMask[b * seqLen + offset + j - 1] = 1;
        targets++;
      }
      offset += length;
    }
  });
  return { tokens, lossMask, targets };
}

/** Steps one epoch takes at batch B. */
export function stepsPerEpoch(rowCount: number, batch: number): number {
  return Math.ceil(rowCount / batch);
}
