// The drift watch: when HEAD moves (a commit, a pull, a branch switch) the active adapter is
// scored on the files changed since its training commit (trainer/training/eval/drift.ts) and the
// status carries the result. HEAD is polled by reading two small files (HEAD and the ref it names,
// or packed-refs): git replaces them by rename, which file watchers lose track of. Scoring goes
// through the model's review scorer, queued between completions in the engine worker.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AdapterManifest } from '../../trainer/adapters/manifest';
import { runGit } from '../../trainer/data/mining/git-command';
import {
  DEFAULT_DRIFT_THRESHOLDS,
  measureDrift,
  type DriftReport,
  type DriftThresholds,
} from '../../trainer/training/eval/drift';
import type { LoadedModel } from '../model/host';

/** How often HEAD is read: two small file reads, no process. */
const POLL_MS = 2000;
/** Quiet time after HEAD moves before scoring: a rebase or a pull moves it many times. */
const DEBOUNCE_MS = 3000;

export interface DriftWatchDeps {
  root: string;
  model: () => LoadedModel | null;
  /** The manifest of the adapter serving now (null: the base model serves). */
  manifest: () => Promise<AdapterManifest | null>;
  thresholds: () => DriftThresholds;
  publish: (drift: DriftReport | null) => void;
  /** Keeps a measured reading for the adapters report (the registry's drift.jsonl). */
  record?: (drift: DriftReport) => void;
  log: (line: string) => void;
}

export class DriftWatch {
  private timer: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private lastKey: string | null = null;
  private files: { head: string; common: string } | null = null;
  private running: Promise<void> = Promise.resolve();
  private disposed = false;

  constructor(private readonly deps: DriftWatchDeps) {}

  /** Starts polling; the first check runs once the git folder is found. */
  async start(): Promise<void> {
    try {
      const [gitDir, common] = (await runGit(this.deps.root, ['rev-parse', '--absolute-git-dir', '--git-common-dir']))
        .trim()
        .split('\n');
      this.files = { head: gitDir, common: path.resolve(this.deps.root, common) };
    } catch (error) {
      this.deps.log(`drift watch off: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    if (this.disposed) return;
    this.lastKey = this.headKey();
    this.timer = setInterval(() => this.poll(), POLL_MS);
    this.timer.unref();
  }

  /** What identifies HEAD's commit without running git: HEAD's text and its ref's. */
  private headKey(): string {
    if (!this.files) return '';
    const read = (file: string) => {
      try {
        return fs.readFileSync(file, 'utf8');
      } catch {
        return '';
      }
    };
    const head = read(path.join(this.files.head, 'HEAD'));
    const ref = /^ref: (.+)$/m.exec(head)?.[1]?.trim();
    if (!ref || ref.includes('..')) return head;
    const loose = read(path.join(this.files.common, ref));
    if (loose) return `${head}\0${loose}`;
    let packed = '';
    try {
      const stat = fs.statSync(path.join(this.files.common, 'packed-refs'));
      packed = `${stat.mtimeMs}:${stat.size}`;
    } catch {
      // no packed refs
    }
    return `${head}\0packed ${packed}`;
  }

  private poll(): void {
    const key = this.headKey();
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.schedule(DEBOUNCE_MS);
  }

  /** Checks after `delayMs` (again if asked while waiting); the adapter changing asks too. */
  schedule(delayMs = 0): void {
    if (this.disposed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.running = this.running.then(() => this.check());
    }, delayMs);
    this.debounce.unref();
  }

  private async check(): Promise<void> {
    const model = this.deps.model();
    try {
      const manifest = model ? await this.deps.manifest() : null;
      if (!model || !manifest || this.disposed) return this.deps.publish(null);
      const serving = model.adapterId === manifest.id && model.weightsKind === 'lora';
      const drift = await measureDrift({
        root: this.deps.root,
        manifest,
        scorer: serving ? model.reviewScorer() : null,
        thresholds: this.deps.thresholds(),
      });
      if (this.disposed) return;
      this.deps.log(`drift of ${manifest.id}: ${drift.message}${drift.drifted ? ' (retrain suggested)' : ''}`);
      this.deps.publish(drift);
      if (!drift.problem) this.deps.record?.(drift);
    } catch (error) {
      // A failed check costs one log line; completions never wait on it.
      this.deps.log(`drift check failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
  }
}

/** Thresholds from settings, with the defaults standing in for missing or invalid values. */
export function driftThresholds(setting: Partial<DriftThresholds> | undefined): DriftThresholds {
  const share = Number(setting?.lossIncrease);
  const commits = Number(setting?.commitsBehind);
  return {
    lossIncrease: Number.isFinite(share) && share >= 0 ? share : DEFAULT_DRIFT_THRESHOLDS.lossIncrease,
    commitsBehind: Number.isInteger(commits) && commits >= 0 ? commits : DEFAULT_DRIFT_THRESHOLDS.commitsBehind,
  };
}
