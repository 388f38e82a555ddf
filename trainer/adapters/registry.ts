// The adapter registry of one repository. Layout (default location `.idiom/` at the repository
// root, listed in .git/info/exclude so it never shows up in `git status`):
//   .idiom/registry.json        {version, active: {mode: id}, previous: {mode: [id|null…]}, history: […]}
//   .idiom/adapters/<id>/       one folder per adapter (LoRA or full), each with its manifest.json
//   .idiom/staging/             where the trainer writes a finished adapter before `add` moves it in
//   .idiom/registry.lock        held (proper-lockfile) by whichever process is changing the registry
// Membership is the adapters/ folder itself; registry.json holds only which adapter is active per
// mode, the stack of earlier active ones (for rollback) and an append-only history. Every change is
// a temp file + fsync + rename, so a kill -9 at any moment leaves the old or the new state, never a
// mix. The CLI and the language server may both change it: changes take the lock; reads do not
// need it (a rename is atomic).
// The folder may come from a repository Idiom did not write (a clone that commits .idiom/): a
// registry whose folder or entries are symbolic links is refused, opening or reading never
// deletes, and a change deletes only what Idiom itself left behind (named and marked as it names
// and marks them), never through a link.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as lockfile from 'proper-lockfile';
import {
  adapterKind,
  checkWeightsHash,
  fsyncPath,
  readManifest,
  writeTextAtomically,
  type AdapterKind,
} from './folder';
import { loadFullModel, type LoadedFullModel } from './full';
import { applyMemorisationGate } from './memorisation-gate';
import { adapterLabel } from './label';
import { isAdapterId, type AdapterManifest, type HeldOutMetrics, type QualityComparison } from './manifest';
import { MODES, type Mode } from './mode';
import { makeDirectory } from '../util/directories';
import { sha256OfFiles } from '../util/sha256';
import { loadAdapter, type LoadedAdapter } from './peft';
import type { ModelConfig } from '../model/config';

export const DEFAULT_REGISTRY_DIR = '.idiom';
export const REGISTRY_FILE = 'registry.json';
export const REGISTRY_VERSION = 1;
const LOCK_FILE = 'registry.lock';
const ADAPTERS_DIR = 'adapters';
const STAGING_DIR = 'staging';
const TRASH_DIR = 'trash';
/** Beside trash/<entry>: written before the rename into trash/, so only Idiom's own entries are ever deleted. */
const TRASH_MARK = '.idiom-trash';
/** Rollback depth kept per mode. */
const MAX_PREVIOUS = 50;

export type HistoryAction = 'activate' | 'promote' | 'rollback' | 'remove';

export interface HistoryEntry {
  /** ISO 8601. */
  at: string;
  action: HistoryAction;
  mode: Mode;
  /** Adapter active before; null = the base model alone. */
  from: string | null;
  to: string | null;
  reason: string;
}

export interface RegistryState {
  version: typeof REGISTRY_VERSION;
  active: Partial<Record<Mode, string>>;
  /** Per mode, earlier active adapters, most recent last (null = the base model); rollback pops. */
  previous: Partial<Record<Mode, Array<string | null>>>;
  history: HistoryEntry[];
}

export interface RegistryOptions {
  /** Registry folder: absolute, or relative to the repository root. Default `.idiom`. */
  location?: string;
  /** Add the folder to .git/info/exclude when it lies inside the repository. Default true. */
  excludeFromGit?: boolean;
  /** A lock older than this is taken over (its holder died). proper-lockfile's minimum is 2000. Default 10000. */
  lockStaleMs?: number;
  /** How long to wait for another process's lock. Default 30000. */
  lockWaitMs?: number;
  /** Only read: create nothing, take no lock, delete nothing; changes throw. Default false. */
  readOnly?: boolean;
}

/** One row of `list()`; the language server's AdapterSummary derives from it (less kind and base). */
export interface AdapterEntry {
  id: string;
  created: string;
  /** The mode it was trained for. */
  mode: Mode;
  /** Active for the mode it was trained for. */
  active: boolean;
  /** Every mode it is active for. */
  activeModes: Mode[];
  path: string;
  kind: AdapterKind | null;
  parent: string | null;
  base: { name: string; sha256: string } | null;
  metrics: { base: HeldOutMetrics | null; adapter: HeldOutMetrics | null; quality?: QualityComparison } | null;
  /** What a person tells it apart by: `LoRA r16 · 1a2b3c4` (label.ts); absent when unreadable. */
  label?: string;
  training: { method: string; backend: string; device: string; steps: number; tokens: number; seconds: number } | null;
  /** Why the folder is unusable (unreadable manifest…); the other fields are then best effort. */
  problem?: string;
}

export interface ActivationResult {
  mode: Mode;
  from: string | null;
  to: string | null;
  /** False when `to` was already active. */
  changed: boolean;
}

export interface PromotionResult {
  activated: boolean;
  /** One line a person reads: which losses were compared and why. */
  reason: string;
  candidateLoss: number | null;
  baseLoss: number | null;
  activeId: string | null;
  activeLoss: number | null;
}

function labelOf(manifest: AdapterManifest): string {
  const rank = manifest.training.hyperparameters.r;
  return adapterLabel({
    method: manifest.training.method,
    rank: typeof rank === 'number' ? rank : null,
    head: manifest.repo.head,
    dirty: manifest.repo.dirty,
  });
}

/** The registry folder for a repository (no side effects). */
export function registryLocation(repoRoot: string, options: RegistryOptions = {}): string {
  return path.resolve(repoRoot, options.location ?? DEFAULT_REGISTRY_DIR);
}

/** The nearest folder at or above `start` that holds `.git` (a folder, or a file in a worktree); else `start`. */
export function findRepoRoot(start: string): string {
  let dir = path.resolve(start);
  for (;;) {
    if (fs.existsSync(path.join(dir, '.git'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(start);
    dir = parent;
  }
}

// Serializes one process's own operations on a registry, so they queue instead of polling the lock.
const inProcessQueues = new Map<string, Promise<unknown>>();

export class Registry {
  readonly adaptersDir: string;
  private readonly stateFile: string;

  private constructor(
    readonly repoRoot: string,
    readonly dir: string,
    private readonly options: Required<Pick<RegistryOptions, 'lockStaleMs' | 'lockWaitMs' | 'readOnly'>>,
  ) {
    this.adaptersDir = path.join(dir, ADAPTERS_DIR);
    this.stateFile = path.join(dir, REGISTRY_FILE);
  }

  /**
   * Opens the registry of the repository at `repoRoot`, creating it if needed (unless `readOnly`).
   * Refuses, in one line, a registry whose folder or entries are symbolic links.
   */
  static async open(repoRoot: string, options: RegistryOptions = {}): Promise<Registry> {
    const root = path.resolve(repoRoot);
    const dir = registryLocation(root, options);
    const readOnly = options.readOnly ?? false;
    const registry = new Registry(root, dir, {
      lockStaleMs: options.lockStaleMs ?? 10_000,
      lockWaitMs: options.lockWaitMs ?? 30_000,
      readOnly,
    });
    refuseLinks(dir);
    if (readOnly) return registry;
    try {
      makeDirectory(registry.adaptersDir);
    } catch (error) {
      throw new Error(
        `${dir}: cannot create the adapter registry (${error instanceof Error ? error.message : String(error)})`,
      );
    }
    if (options.excludeFromGit ?? true)
      await registry.withLock(async () => ensureGitExclude(root, dir), { tidy: false });
    return registry;
  }

  // ---- reading (no lock needed) --------------------------------------------------------------

  /** registry.json, or the empty state when there is none yet. */
  async readState(): Promise<RegistryState> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.stateFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw new Error(`${this.stateFile}: cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    return parseRegistryState(text, this.stateFile);
  }

  adapterPath(id: string): string {
    if (!isAdapterId(id)) throw new Error(`"${id}" is not an adapter id (expected e.g. 20261128-130501-ab12cd)`);
    return path.join(this.adaptersDir, id);
  }

  /** Ids of the adapter folders, oldest first. */
  async ids(): Promise<string[]> {
    const names = await fs.promises.readdir(this.adaptersDir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [] as string[];
      throw new Error(`${this.adaptersDir}: cannot list (${error.code})`);
    });
    return names
      .filter((name) => isAdapterId(name) && lstatOrNull(path.join(this.adaptersDir, name))?.isDirectory() === true)
      .sort();
  }

  async has(id: string): Promise<boolean> {
    return isAdapterId(id) && fs.existsSync(path.join(this.adapterPath(id), 'manifest.json'));
  }

  /** The validated manifest of adapter `id`, or a one-line error. */
  async manifest(id: string): Promise<AdapterManifest> {
    const dir = this.adapterPath(id);
    if (!fs.existsSync(dir)) throw new Error(`no adapter ${id} in ${this.adaptersDir}`);
    refuseLinksIn(dir);
    const manifest = readManifest(dir);
    if (!manifest) throw new Error(`${dir}: missing manifest.json`);
    if (manifest.id !== id) throw new Error(`${dir}: manifest.json names adapter ${manifest.id}, not ${id}`);
    return manifest;
  }

  /** Every adapter with its metrics and the modes it is active for, oldest first. */
  async list(): Promise<AdapterEntry[]> {
    const state = await this.readState();
    const entries: AdapterEntry[] = [];
    for (const id of await this.ids()) {
      const activeModes = MODES.filter((mode) => state.active[mode] === id);
      const dir = this.adapterPath(id);
      try {
        const manifest = await this.manifest(id);
        entries.push({
          id,
          created: manifest.created,
          mode: manifest.mode,
          active: activeModes.includes(manifest.mode),
          activeModes,
          path: dir,
          kind: adapterKind(dir),
          parent: manifest.parent,
          base: { ...manifest.base },
          metrics: {
            base: manifest.metrics.base,
            adapter: manifest.metrics.adapter,
            ...(manifest.metrics.quality ? { quality: manifest.metrics.quality } : {}),
          },
          label: labelOf(manifest),
          training: {
            method: manifest.training.method,
            backend: manifest.training.backend,
            device: manifest.training.device,
            steps: manifest.training.steps,
            tokens: manifest.training.tokens,
            seconds: manifest.training.seconds,
          },
        });
      } catch (error) {
        entries.push({
          id,
          created: '',
          mode: activeModes[0] ?? 'complete',
          active: activeModes.length > 0,
          activeModes,
          path: dir,
          kind: null,
          parent: null,
          base: null,
          metrics: null,
          training: null,
          problem: (error as Error).message,
        });
      }
    }
    return entries;
  }

  async activeId(mode: Mode): Promise<string | null> {
    checkMode(mode);
    return (await this.readState()).active[mode] ?? null;
  }

  /** Folder of the adapter active for `mode`, null for the base model; a clear error if it vanished. */
  async activePath(mode: Mode): Promise<string | null> {
    const id = await this.activeId(mode);
    if (id === null) return null;
    const dir = this.adapterPath(id);
    if (!fs.existsSync(dir))
      throw new Error(
        `adapter ${id}, active for ${mode}, is missing from ${this.adaptersDir}; roll back or activate another`,
      );
    refuseLinksIn(dir);
    return dir;
  }

  /** A fresh folder path under .idiom/staging/ for writeAdapter / writeFullModel before `add`. */
  stagingPath(name = `run-${Date.now()}-${randomBytes(3).toString('hex')}`): string {
    return path.join(this.dir, STAGING_DIR, name);
  }

  // ---- changing (under the lock) -------------------------------------------------------------

  /**
   * Takes a finished adapter folder into the registry as adapters/<id>/ (moved by default; copied
   * when `move` is false or the folder is on another file system). Checks its manifest and that
   * its weights still match the manifest's hash.
   */
  async add(source: string, options: { move?: boolean } = {}): Promise<AdapterManifest> {
    const dir = path.resolve(source);
    adapterKind(dir);
    const manifest = readManifest(dir);
    if (!manifest) throw new Error(`${dir}: missing manifest.json; only adapters with provenance enter the registry`);
    const actual = await sha256OfFiles(manifest.weights.files.map((file) => path.join(dir, file)));
    checkWeightsHash(dir, manifest, manifest.weights.files, actual);
    return this.withLock(async () => {
      const target = this.adapterPath(manifest.id);
      if (fs.existsSync(target)) throw new Error(`adapter ${manifest.id} is already in the registry (${target})`);
      if (options.move ?? true) {
        try {
          await fs.promises.rename(dir, target);
          fsyncPath(this.adaptersDir);
          return manifest;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EXDEV')
            throw new Error(
              `${dir}: cannot move into the registry (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
            );
        }
      }
      // Copy into a hidden folder first so adapters/<id> appears whole.
      const temp = path.join(this.adaptersDir, `.${manifest.id}.tmp-${process.pid}-${randomBytes(3).toString('hex')}`);
      await fs.promises.cp(dir, temp, { recursive: true });
      await fs.promises.rename(temp, target);
      fsyncPath(this.adaptersDir);
      if (options.move ?? true) await fs.promises.rm(dir, { recursive: true, force: true });
      return manifest;
    });
  }

  /** Makes `id` the adapter served for `mode` (no held-out comparison: see promote). */
  async activate(id: string, mode: Mode, options: { reason?: string } = {}): Promise<ActivationResult> {
    checkMode(mode);
    return this.withLock(async () => {
      const manifest = await this.manifest(id);
      checkModeFit(manifest, mode);
      return this.update((state) => setActive(state, mode, id, 'activate', options.reason ?? 'activated by hand'));
    });
  }

  /**
   * Activates `candidateId` for `mode` only if its held-out loss beats both the base's and the
   * currently active adapter's (read from the manifests; the candidate's own evaluation of the
   * active adapter on the same split is preferred when it has one). `force` activates anyway.
   */
  async promote(candidateId: string, mode: Mode, options: { force?: boolean } = {}): Promise<PromotionResult> {
    checkMode(mode);
    return this.withLock(async () => {
      const candidate = await this.manifest(candidateId);
      checkModeFit(candidate, mode);
      const state = await this.readState();
      const activeId = state.active[mode] ?? null;
      let active: AdapterManifest | null = null;
      let activeProblem: string | null = null;
      if (activeId !== null && activeId !== candidateId) {
        try {
          active = await this.manifest(activeId);
        } catch (error) {
          activeProblem = (error as Error).message;
        }
      }
      const decision = decidePromotion({ candidate, activeId, active, activeProblem, force: options.force ?? false });
      if (decision.activated && activeId !== candidateId) {
        await this.update((s) => setActive(s, mode, candidateId, 'promote', decision.reason));
      }
      return decision;
    });
  }

  /** Re-activates the adapter active before the current one for `mode` (or the base model). */
  async rollback(mode: Mode, options: { reason?: string } = {}): Promise<ActivationResult> {
    checkMode(mode);
    return this.withLock(async () => {
      const state = await this.readState();
      const stack = [...(state.previous[mode] ?? [])];
      const from = state.active[mode] ?? null;
      let target: string | null | undefined;
      while (stack.length > 0) {
        const candidate = stack.pop()!;
        if (candidate === null || (await this.has(candidate))) {
          target = candidate;
          break;
        }
      }
      if (target === undefined) {
        throw new Error(
          `nothing to roll back to for mode ${mode}: no earlier adapter was active${from ? ` before ${from}` : ''}`,
        );
      }
      const to = target;
      await this.update((s) => {
        const next = clone(s);
        next.previous[mode] = stack;
        if (to === null) delete next.active[mode];
        else next.active[mode] = to;
        next.history.push({
          at: new Date().toISOString(),
          action: 'rollback',
          mode,
          from,
          to,
          reason: options.reason ?? 'rolled back',
        });
        return { state: next, result: undefined };
      });
      return { mode, from, to, changed: from !== to };
    });
  }

  /**
   * Deletes adapter `id`. Refuses while it is active for any mode unless `force`, which first rolls
   * those modes back. Only adapters/<id> is touched.
   */
  async remove(
    id: string,
    options: { force?: boolean } = {},
  ): Promise<{ id: string; deactivated: ActivationResult[] }> {
    const dir = this.adapterPath(id);
    return this.withLock(async () => {
      if (!fs.existsSync(dir)) throw new Error(`no adapter ${id} in ${this.adaptersDir}`);
      const state = await this.readState();
      const activeModes = MODES.filter((mode) => state.active[mode] === id);
      if (activeModes.length > 0 && !options.force) {
        throw new Error(
          `adapter ${id} is active for ${activeModes.join(', ')}; activate another or roll back first (or force the removal)`,
        );
      }
      const deactivated: ActivationResult[] = [];
      const existing = new Set(await this.ids());
      await this.update((s) => {
        const next = clone(s);
        for (const mode of MODES) {
          const stack = (next.previous[mode] ?? []).filter((entry) => entry !== id);
          if (next.active[mode] === id) {
            let to: string | null = null;
            while (stack.length > 0) {
              const candidate = stack.pop()!;
              if (candidate === null || existing.has(candidate)) {
                to = candidate;
                break;
              }
            }
            if (to === null) delete next.active[mode];
            else next.active[mode] = to;
            next.history.push({
              at: new Date().toISOString(),
              action: 'remove',
              mode,
              from: id,
              to,
              reason: `removed ${id}`,
            });
            deactivated.push({ mode, from: id, to, changed: true });
          }
          if (stack.length > 0) next.previous[mode] = stack;
          else delete next.previous[mode];
        }
        return { state: next, result: undefined };
      });
      // Rename first (atomic), then delete: adapters/ never holds a half-deleted adapter. The mark
      // comes first, so a leftover of a crash is known to be Idiom's.
      const trash = path.join(this.dir, TRASH_DIR);
      await fs.promises.mkdir(trash, { recursive: true });
      refuseLinks(this.dir);
      const doomed = path.join(trash, `${id}-${randomBytes(3).toString('hex')}`);
      await fs.promises.writeFile(`${doomed}${TRASH_MARK}`, '', { flag: 'wx' });
      await fs.promises.rename(dir, doomed);
      fsyncPath(this.adaptersDir);
      await fs.promises.rm(doomed, { recursive: true, force: true });
      await fs.promises.rm(`${doomed}${TRASH_MARK}`, { force: true });
      return { id, deactivated };
    });
  }

  // ---- internals -----------------------------------------------------------------------------

  /** Reads the state, applies `change`, writes the result atomically. Call only under the lock. */
  private async update<T>(change: (state: RegistryState) => { state: RegistryState; result: T }): Promise<T> {
    const { state, result } = change(await this.readState());
    writeTextAtomically(this.stateFile, `${JSON.stringify(state, null, 2)}\n`);
    return result;
  }

  /**
   * Runs `fn` holding the registry lock (in-process queue + proper-lockfile across processes);
   * `tidy` first removes what writers that died left behind.
   */
  private async withLock<T>(fn: () => Promise<T>, options: { tidy?: boolean } = {}): Promise<T> {
    if (this.options.readOnly)
      throw new Error(`${this.dir}: the registry was opened read-only; it cannot be changed here`);
    const key = this.dir;
    const before = inProcessQueues.get(key) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.withFileLock(fn, options.tidy ?? true));
    inProcessQueues.set(key, run);
    try {
      return await run;
    } finally {
      if (inProcessQueues.get(key) === run) inProcessQueues.delete(key);
    }
  }

  private async withFileLock<T>(fn: () => Promise<T>, tidy: boolean): Promise<T> {
    refuseLinks(this.dir);
    let compromised: Error | null = null;
    const stale = Math.max(this.options.lockStaleMs, 2000);
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.dir, {
        lockfilePath: path.join(this.dir, LOCK_FILE),
        realpath: false,
        stale,
        retries: { retries: Math.ceil(this.options.lockWaitMs / 100), factor: 1, minTimeout: 100, maxTimeout: 100 },
        // The default throws from a timer, which would take the language server down.
        onCompromised: (error) => {
          compromised = error;
        },
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ELOCKED')
        throw new Error(
          `${this.dir}: the registry is locked by another Idiom process (waited ${this.options.lockWaitMs} ms)`,
        );
      throw new Error(`${this.dir}: cannot lock the registry (${code ?? (error as Error).message})`);
    }
    try {
      if (tidy) this.removeLeftovers();
      const result = await fn();
      if (compromised)
        throw new Error(`${this.dir}: lost the registry lock while changing it (${(compromised as Error).message})`);
      return result;
    } finally {
      await release().catch(() => undefined);
    }
  }

  /**
   * Temp files and folders of writers that died (only lock holders create them, so none is live).
   * Only entries named as Idiom names them, of the kind it makes them (lstat: a link is never
   * followed nor taken for one), and in trash/ only those it marked, so a folder of the user's
   * given as the registry loses nothing.
   */
  private removeLeftovers(): void {
    const clean = (folder: string, isLeftover: (name: string, stat: fs.Stats) => boolean): void => {
      if (lstatOrNull(folder)?.isDirectory() !== true) return;
      let names: string[];
      try {
        names = fs.readdirSync(folder);
      } catch {
        return;
      }
      for (const name of names) {
        const stat = lstatOrNull(path.join(folder, name));
        if (stat && !stat.isSymbolicLink() && isLeftover(name, stat))
          fs.rmSync(path.join(folder, name), { recursive: true, force: true });
      }
    };
    const stateTemp = /^\.registry\.json\.\d+\.[0-9a-z]+\.tmp$/; // writeTextAtomically's temp name
    clean(this.dir, (name, stat) => stat.isFile() && stateTemp.test(name));
    clean(this.adaptersDir, (name, stat) => {
      const match = /^\.(.+)\.tmp-\d+-[0-9a-f]+$/.exec(name);
      return stat.isDirectory() && match !== null && isAdapterId(match[1]);
    });
    const trash = path.join(this.dir, TRASH_DIR);
    const trashEntry = (name: string): boolean => {
      const match = /^(.+)-[0-9a-f]{6}$/.exec(name);
      return match !== null && isAdapterId(match[1]);
    };
    const marked = (name: string): boolean => lstatOrNull(path.join(trash, `${name}${TRASH_MARK}`))?.isFile() === true;
    clean(trash, (name, stat) => stat.isDirectory() && trashEntry(name) && marked(name));
    // A mark whose entry is gone (the crash came before the rename or after the delete).
    clean(trash, (name, stat) => {
      const entry = name.slice(0, -TRASH_MARK.length);
      return (
        stat.isFile() && name.endsWith(TRASH_MARK) && trashEntry(entry) && lstatOrNull(path.join(trash, entry)) === null
      );
    });
    // writeAdapter's temp folders in staging/ are written without the lock: only those of dead processes go.
    clean(path.join(this.dir, STAGING_DIR), (name, stat) => {
      const match = /^\..+\.tmp-(\d+)-[0-9a-f]+$/.exec(name);
      return stat.isDirectory() && match !== null && !processAlive(Number(match[1]));
    });
  }
}

function lstatOrNull(file: string): fs.Stats | null {
  try {
    return fs.lstatSync(file);
  } catch {
    return null;
  }
}

function linkError(file: string): Error {
  return new Error(
    `${file} is a symbolic link; Idiom never follows links inside an adapter registry (a registry Idiom did not write?): remove the link or pass another --registry`,
  );
}

/**
 * Refuses a registry whose folder, or an entry of it or of its adapters/, staging/ and trash/, is a
 * symbolic link. A registry that does not exist yet passes.
 */
export function refuseLinks(dir: string): void {
  const top = lstatOrNull(dir);
  if (top === null) return;
  if (top.isSymbolicLink()) throw linkError(dir);
  if (!top.isDirectory()) throw new Error(`${dir}: not a folder, so not an adapter registry`);
  refuseLinksIn(dir);
  for (const sub of [ADAPTERS_DIR, STAGING_DIR, TRASH_DIR]) {
    if (lstatOrNull(path.join(dir, sub))?.isDirectory() === true) refuseLinksIn(path.join(dir, sub));
  }
}

/** Refuses a folder that holds a symbolic link (one level). */
function refuseLinksIn(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (error) {
    throw new Error(`${dir}: cannot list (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  for (const name of names)
    if (lstatOrNull(path.join(dir, name))?.isSymbolicLink()) throw linkError(path.join(dir, name));
}

export type ActiveModel =
  | { kind: 'lora'; id: string; adapter: LoadedAdapter }
  | { kind: 'full'; id: string; model: LoadedFullModel };

/**
 * Loads what serves `mode` on top of `base` (config and weights sha256 from loadCheckpoint): the
 * active LoRA adapter or full fine-tune, checked against that base, or null for the base alone.
 */
export async function loadActive(
  registry: Registry,
  mode: Mode,
  base: { config: ModelConfig; sha256: string },
): Promise<ActiveModel | null> {
  const dir = await registry.activePath(mode);
  if (dir === null) return null;
  return loadAdapterDir(dir, base);
}

/** Adapter `id` of the registry, checked against the base; a one-line error when it is not there. */
export async function loadById(
  registry: Registry,
  id: string,
  base: { config: ModelConfig; sha256: string },
): Promise<ActiveModel> {
  if (!(await registry.has(id))) throw new Error(`no adapter ${id} in ${registry.adaptersDir}`);
  return loadAdapterDir(registry.adapterPath(id), base);
}

/** An adapter folder outside any registry (a candidate before it is added), checked against the base. */
export async function loadAdapterFolder(
  dir: string,
  base: { config: ModelConfig; sha256: string },
): Promise<{ model: ActiveModel; entry: AdapterEntry }> {
  const manifest = readManifest(dir);
  if (!manifest) throw new Error(`${dir}: no manifest.json`);
  const model = await loadAdapterDir(dir, base);
  const entry: AdapterEntry = {
    id: manifest.id,
    created: manifest.created,
    mode: manifest.mode,
    active: false,
    activeModes: [],
    path: dir,
    kind: model.kind,
    parent: manifest.parent,
    base: manifest.base,
    metrics: { base: manifest.metrics.base, adapter: manifest.metrics.adapter },
    label: labelOf(manifest),
    training: manifest.training,
  };
  return { model: { ...model, id: manifest.id }, entry };
}

async function loadAdapterDir(dir: string, base: { config: ModelConfig; sha256: string }): Promise<ActiveModel> {
  const id = path.basename(dir);
  if (adapterKind(dir) === 'lora')
    return { kind: 'lora', id, adapter: await loadAdapter(dir, base.config, { baseSha256: base.sha256 }) };
  return { kind: 'full', id, model: await loadFullModel(dir, base.config, { baseSha256: base.sha256 }) };
}

interface PromotionInput {
  candidate: AdapterManifest;
  activeId: string | null;
  active: AdapterManifest | null;
  activeProblem?: string | null;
  force: boolean;
}

/**
 * The promotion rule as a pure function of manifests (see Registry.promote): the candidate must
 * beat the base's held-out loss and the active adapter's, and, where its manifest carries a replay
 * of the held-out lines (metrics.quality), must not lose there to what served before it: fewer
 * exact lines, or as many and a smaller share of accepted characters; and its memorisation check
 * (metrics.memorisation) must not have written a planted canary or a credential.
 */
export function decidePromotion(input: PromotionInput): PromotionResult {
  return applyMemorisationGate(decideOnLossAndReplay(input), input.candidate, input.force);
}

function decideOnLossAndReplay(input: PromotionInput): PromotionResult {
  const onLoss = decideOnLoss(input);
  const quality = input.candidate.metrics.quality;
  if (!onLoss.activated || onLoss.reason.startsWith('forced') || !quality) return onLoss;
  const { candidate, reference } = quality;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const loses =
    candidate.exactMatch < reference.score.exactMatch ||
    (candidate.exactMatch === reference.score.exactMatch &&
      candidate.acceptedCharShare < reference.score.acceptedCharShare);
  const replay = `replayed held-out lines: ${pct(candidate.exactMatch)} exact, ${pct(candidate.acceptedCharShare)} accepted characters vs ${reference.name}'s ${pct(reference.score.exactMatch)}, ${pct(reference.score.acceptedCharShare)}`;
  if (!loses) return { ...onLoss, reason: `${onLoss.reason}; ${replay}` };
  const refused = `${onLoss.reason}, but it loses on ${replay}`;
  return input.force ? { ...onLoss, reason: `forced: ${refused}` } : { ...onLoss, activated: false, reason: refused };
}

function decideOnLoss(input: PromotionInput): PromotionResult {
  const { candidate, activeId, active, force } = input;
  const candidateLoss = candidate.metrics.adapter?.loss ?? null;
  const baseLoss = candidate.metrics.base?.loss ?? null;
  const sameSplit = activeId !== null ? candidate.metrics.others?.[activeId] : undefined;
  const activeLoss =
    activeId === null || activeId === candidate.id ? null : (sameSplit?.loss ?? active?.metrics.adapter?.loss ?? null);
  const result = (activated: boolean, reason: string): PromotionResult => ({
    activated,
    reason,
    candidateLoss,
    baseLoss,
    activeId,
    activeLoss,
  });
  const refuse = (reason: string): PromotionResult =>
    force ? result(true, `forced: ${reason}`) : result(false, reason);
  const fmt = (n: number): string => n.toFixed(4);

  if (activeId === candidate.id) return result(false, `${candidate.id} is already active`);
  if (candidateLoss === null) return refuse(`${candidate.id} has no held-out metrics to compare`);
  if (baseLoss === null) return refuse(`${candidate.id} has no held-out loss of the base model to compare with`);
  if (!(candidateLoss < baseLoss))
    return refuse(`held-out loss ${fmt(candidateLoss)} does not beat the base model's ${fmt(baseLoss)}`);
  if (activeId === null)
    return result(
      true,
      `held-out loss ${fmt(candidateLoss)} beats the base model's ${fmt(baseLoss)}; no adapter was active`,
    );
  if (activeLoss === null) {
    const why = input.activeProblem ?? `active adapter ${activeId} has no held-out metrics`;
    return result(
      true,
      `held-out loss ${fmt(candidateLoss)} beats the base model's ${fmt(baseLoss)}; ${why}, so it was compared with the base only`,
    );
  }
  const source = sameSplit ? 'on the same held-out split' : 'from its own manifest';
  if (!(candidateLoss < activeLoss)) {
    return refuse(
      `held-out loss ${fmt(candidateLoss)} does not beat active adapter ${activeId}'s ${fmt(activeLoss)} (${source})`,
    );
  }
  return result(
    true,
    `held-out loss ${fmt(candidateLoss)} beats the base model's ${fmt(baseLoss)} and active adapter ${activeId}'s ${fmt(activeLoss)} (${source})`,
  );
}

function setActive(
  state: RegistryState,
  mode: Mode,
  id: string,
  action: HistoryAction,
  reason: string,
): { state: RegistryState; result: ActivationResult } {
  const from = state.active[mode] ?? null;
  if (from === id) return { state, result: { mode, from, to: id, changed: false } };
  const next = clone(state);
  next.active[mode] = id;
  next.previous[mode] = [...(next.previous[mode] ?? []), from].slice(-MAX_PREVIOUS);
  next.history.push({ at: new Date().toISOString(), action, mode, from, to: id, reason });
  return { state: next, result: { mode, from, to: id, changed: true } };
}

/** A compliance adapter is trained on the configured paths under a policy; nothing else serves that mode. */
function checkModeFit(manifest: AdapterManifest, mode: Mode): void {
  if (mode === 'compliance' && manifest.mode !== 'compliance') {
    throw new Error(
      `adapter ${manifest.id} was trained for mode ${manifest.mode}; only an adapter trained for compliance can serve compliance`,
    );
  }
}

function checkMode(mode: string): asserts mode is Mode {
  if (!MODES.includes(mode as Mode)) throw new Error(`unknown mode "${mode}" (expected ${MODES.join(', ')})`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function emptyState(): RegistryState {
  return { version: REGISTRY_VERSION, active: {}, previous: {}, history: [] };
}

function clone(state: RegistryState): RegistryState {
  return JSON.parse(JSON.stringify(state)) as RegistryState;
}

/** Validates registry.json; one line naming the problem otherwise. */
export function parseRegistryState(text: string, source = REGISTRY_FILE): RegistryState {
  const fail = (message: string): never => {
    throw new Error(`${source}: ${message}`);
  };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return fail(`invalid JSON (${(error as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return fail('must be a JSON object');
  const raw = json as Record<string, unknown>;
  if (raw.version !== REGISTRY_VERSION)
    fail(`version is ${JSON.stringify(raw.version)}; this Idiom reads version ${REGISTRY_VERSION}`);
  const objectField = (key: string): Record<string, unknown> => {
    const value = raw[key] ?? {};
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return fail(`"${key}" must be an object`);
    return value as Record<string, unknown>;
  };
  const idOrNull = (value: unknown, where: string): string | null => {
    if (value === null) return null;
    if (typeof value !== 'string' || !isAdapterId(value))
      return fail(`${where} must be an adapter id or null, got ${JSON.stringify(value)}`);
    return value;
  };
  const state = emptyState();
  for (const [mode, id] of Object.entries(objectField('active'))) {
    if (!MODES.includes(mode as Mode)) fail(`"active" has unknown mode "${mode}"`);
    const value = idOrNull(id, `active.${mode}`);
    if (value !== null) state.active[mode as Mode] = value;
  }
  for (const [mode, list] of Object.entries(objectField('previous'))) {
    if (!MODES.includes(mode as Mode)) fail(`"previous" has unknown mode "${mode}"`);
    if (!Array.isArray(list)) fail(`previous.${mode} must be a list`);
    state.previous[mode as Mode] = (list as unknown[]).map((id, i) => idOrNull(id, `previous.${mode}[${i}]`));
  }
  const history = raw.history ?? [];
  if (!Array.isArray(history)) fail('"history" must be a list');
  (history as unknown[]).forEach((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(`history[${i}] must be an object`);
    const e = entry as Record<string, unknown>;
    if (typeof e.at !== 'string' || Number.isNaN(Date.parse(e.at))) fail(`history[${i}].at must be an ISO 8601 date`);
    if (!['activate', 'promote', 'rollback', 'remove'].includes(e.action as string))
      fail(`history[${i}].action ${JSON.stringify(e.action)} is unknown`);
    if (!MODES.includes(e.mode as Mode)) fail(`history[${i}].mode ${JSON.stringify(e.mode)} is unknown`);
    if (typeof e.reason !== 'string') fail(`history[${i}].reason must be a string`);
    state.history.push({
      at: e.at as string,
      action: e.action as HistoryAction,
      mode: e.mode as Mode,
      from: idOrNull(e.from ?? null, `history[${i}].from`),
      to: idOrNull(e.to ?? null, `history[${i}].to`),
      reason: e.reason as string,
    });
  });
  return state;
}

/**
 * Lists the registry folder in the repository's .git/info/exclude (once), so adapters never show
 * up as untracked files. Handles worktrees (`.git` file) by writing to the common git folder.
 * Returns the file changed, or null when there was nothing to do.
 */
export function ensureGitExclude(repoRoot: string, registryDir: string): string | null {
  const relative = path.relative(repoRoot, registryDir);
  if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) return null;
  const gitDir = resolveGitDir(repoRoot);
  if (gitDir === null) return null;
  let commonDir = gitDir;
  const commonFile = path.join(gitDir, 'commondir');
  if (fs.existsSync(commonFile)) commonDir = path.resolve(gitDir, fs.readFileSync(commonFile, 'utf8').trim());
  const excludeFile = path.join(commonDir, 'info', 'exclude');
  const entry = `/${relative.split(path.sep).join('/')}/`;
  let text = '';
  try {
    text = fs.readFileSync(excludeFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new Error(`${excludeFile}: cannot read (${(error as NodeJS.ErrnoException).code})`);
  }
  const bare = entry.slice(1, -1);
  const equivalent = new Set([entry, `/${bare}`, bare, `${bare}/`]);
  if (text.split(/\r?\n/).some((line) => equivalent.has(line.trim()))) return null;
  fs.mkdirSync(path.dirname(excludeFile), { recursive: true });
  const separator = text.length > 0 && !text.endsWith('\n') ? '\n' : '';
  writeTextAtomically(excludeFile, `${text}${separator}${entry}\n`);
  return excludeFile;
}

function resolveGitDir(repoRoot: string): string | null {
  const dotGit = path.join(repoRoot, '.git');
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dotGit);
  } catch {
    return null;
  }
  if (stat.isDirectory()) return dotGit;
  const match = /^gitdir:\s*(.+)$/m.exec(fs.readFileSync(dotGit, 'utf8'));
  return match ? path.resolve(repoRoot, match[1].trim()) : null;
}
