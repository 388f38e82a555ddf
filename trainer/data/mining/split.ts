// Temporal held-out split: the newest commits are "the future". Files whose content those commits
// changed are held out whole (training never sees any of their text); the lines they changed are
// what evaluation scores.
//
// Size: the newest `fraction` (10%) of the scanned non-merge commits, rounded up, at least
// `minCommits` (1). If those commits touch no minable file (only docs, say), older commits are
// added one at a time until at least `minFiles` (1) minable file is held out, up to
// `maxFraction` (25%) of the commits. The held-out files stay under `maxFileFraction` (25%) of the
// minable files: on a long history the newest 10% of commits touch most files, and holding them all
// out would leave almost nothing to train on, so the split stops at the commit that would cross it
// (keeping at least `minCommits` and `minFiles`). No split when there is a single commit, or when
// the held-out files would be every minable file (nothing left to train on): the summary says why.

import type { CommitRecord } from './git';

export interface SplitOptions {
  fraction: number;
  minCommits: number;
  minFiles: number;
  maxFraction: number;
  maxFileFraction: number;
}

export const DEFAULT_SPLIT_OPTIONS: SplitOptions = {
  fraction: 0.1,
  minCommits: 1,
  minFiles: 1,
  maxFraction: 0.25,
  maxFileFraction: 0.25,
};

export interface TemporalSplit {
  // Commits scanned (non-merge, newest first).
  commitCount: number;
  heldOutCommits: { id: string; time: number }[];
  // The newest commit that is not held out: held-out lines are those changed since it.
  baseCommit: string | null;
  // Indices of held-out files (into the file list the history was computed for).
  heldOutFiles: Set<number>;
  // Why there is no held-out set, when there is none.
  note: string | null;
}

// `eligible(i)`: file i can be mined at all (passed the path filters), so it counts toward the
// minimum; `eligibleCount` is how many files at HEAD are eligible.
export function temporalSplit(
  commits: readonly CommitRecord[],
  eligible: (fileIndex: number) => boolean,
  eligibleCount: number,
  options: SplitOptions = DEFAULT_SPLIT_OPTIONS,
): TemporalSplit {
  const none = (note: string): TemporalSplit => ({
    commitCount: commits.length,
    heldOutCommits: [],
    baseCommit: null,
    heldOutFiles: new Set(),
    note,
  });
  if (commits.length < 2) return none(`only ${commits.length} commit(s): no held-out split`);
  const most = Math.max(1, Math.min(commits.length - 1, Math.floor(commits.length * options.maxFraction)));
  let count = Math.min(most, Math.max(options.minCommits, Math.ceil(commits.length * options.fraction)));
  const files = new Set<number>();
  const addCommit = (commit: CommitRecord) => {
    for (const file of commit.files) if (eligible(file)) files.add(file);
  };
  const fileCap = Math.max(options.minFiles, Math.floor(eligibleCount * options.maxFileFraction));
  const newFiles = (commit: CommitRecord) =>
    new Set(commit.files.filter((file) => eligible(file) && !files.has(file))).size;
  for (let i = 0; i < count; i++) {
    const enough = i >= options.minCommits && files.size >= options.minFiles;
    if (enough && files.size + newFiles(commits[i]) > fileCap) {
      count = i;
      break;
    }
    addCommit(commits[i]);
  }
  while (files.size < options.minFiles && count < most) addCommit(commits[count++]);
  if (files.size === 0) return none(`the newest ${count} commit(s) change no minable file: no held-out split`);
  if (files.size >= eligibleCount) {
    return none('the newest commits change every minable file: no held-out split (nothing left to train on)');
  }
  return {
    commitCount: commits.length,
    heldOutCommits: commits.slice(0, count).map((commit) => ({ id: commit.id, time: commit.time })),
    baseCommit: commits[count]?.id ?? null,
    heldOutFiles: files,
    note: null,
  };
}
