// How Idiom runs git on a repository it did not write. The repository's own config can name
// programs that git starts even while it only reads: core.fsmonitor (run by anything that reads
// the index), hooks (post-index-change when a refreshed index is written), filter drivers (clean,
// smudge, process: run when work-tree files are compared or checked out) and diff drivers
// (textconv, external diff). Every git process Idiom starts goes through here:
// - the config below switches fsmonitor, hooks and external diff off for every command;
// - `filterOverrides` switches off each filter driver the config names (git has no wildcard for
//   them), for the one command that compares the work tree (`dirtyWorkTree`);
// - commands that produce diffs pass --no-textconv --no-ext-diff themselves;
// - GIT_OPTIONAL_LOCKS=0 keeps status from writing the index, and the environment is minimal.

import { execFileSync, spawn } from 'node:child_process';

const SAFE_CONFIG = [
  // Empty rather than false: before git 2.36 the value is a program path, and "false" is one.
  'core.fsmonitor=',
  'core.hooksPath=/dev/null',
  'core.quotePath=false',
  'diff.external=',
  'log.showSignature=false',
  'color.ui=never',
];

/**
 * A minimal environment: inherited GIT_DIR/GIT_INDEX_FILE/GIT_CONFIG_* (set inside hooks, or by
 * an editor) must not redirect or reconfigure the commands. HOME/XDG_CONFIG_HOME keep the user's
 * global excludes file and safe.directory settings.
 */
export function gitEnvironment(options: { network?: boolean } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LC_ALL: 'C', GIT_TERMINAL_PROMPT: '0', GIT_OPTIONAL_LOCKS: '0' };
  const names = ['PATH', 'HOME', 'XDG_CONFIG_HOME', 'USERPROFILE', 'SystemRoot', 'TMPDIR', 'TEMP', 'TMP'];
  if (options.network) names.push(...NETWORK_ENVIRONMENT);
  for (const name of names) {
    if (process.env[name] !== undefined) env[name] = process.env[name];
  }
  return env;
}

/** What fetch and push to a remote need: the ssh agent, ssh overrides and proxies. */
const NETWORK_ENVIRONMENT = [
  'SSH_AUTH_SOCK',
  'SSH_AGENT_PID',
  'GIT_SSH',
  'GIT_SSH_COMMAND',
  'GIT_ASKPASS',
  'SSH_ASKPASS',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
];

/** `git <args>` with the safe config first; `extra` are more `key=value` settings. */
export function safeGitArgs(args: readonly string[], extra: readonly string[] = []): string[] {
  return [...[...SAFE_CONFIG, ...extra].flatMap((setting) => ['-c', setting]), ...args];
}

export function firstLine(message: string): string {
  return (
    message
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line.length > 0) ?? message
  );
}

function verb(args: readonly string[]): string {
  return args.find((a) => !a.startsWith('-') && !a.includes('=')) ?? 'command';
}

/** Runs git in `cwd` and resolves with its stdout; rejects with one line (git's first stderr line). */
export async function runGit(
  cwd: string,
  args: readonly string[],
  options: { input?: string; extra?: readonly string[]; network?: boolean } = {},
): Promise<string> {
  return (await runGitBytes(cwd, args, options)).toString('utf8');
}

/** runGit with bytes in and out (blobs). `network` lets fetch and push reach the remote. */
export function runGitBytes(
  cwd: string,
  args: readonly string[],
  options: { input?: string | Uint8Array; extra?: readonly string[]; network?: boolean } = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', safeGitArgs(args, options.extra), {
      cwd,
      env: gitEnvironment({ network: options.network }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.stdin.on('error', () => undefined); // reported through 'close'
    child.on('error', (error) => reject(new Error(`cannot run git: ${error.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`git ${verb(args)} failed: ${firstLine(Buffer.concat(err).toString('utf8'))}`));
    });
    child.stdin.end(options.input ?? '');
  });
}

/** runGit, blocking (for the few synchronous callers). */
export function runGitSync(cwd: string, args: readonly string[], extra: readonly string[] = []): string {
  try {
    return execFileSync('git', safeGitArgs(args, extra), {
      cwd,
      env: gitEnvironment(),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 28,
    });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr;
    throw new Error(`git ${verb(args)} failed: ${firstLine(stderr || (error as Error).message)}`);
  }
}

/**
 * Settings that switch off every filter driver the repository's config names (clean, smudge and
 * process empty, not required). Throws, in one line, for a driver name that `-c` cannot carry.
 */
export function filterOverrides(cwd: string): string[] {
  let listed: string;
  try {
    listed = runGitSync(cwd, ['config', '-z', '--name-only', '--get-regexp', '^filter\\.']);
  } catch {
    return []; // exit 1: no such settings
  }
  const names = new Set<string>();
  for (const key of listed.split('\0')) {
    const last = key.lastIndexOf('.');
    if (key.startsWith('filter.') && last > 'filter.'.length) names.add(key.slice('filter.'.length, last));
  }
  const settings: string[] = [];
  for (const name of names) {
    if (/[=\n\0]/.test(name))
      throw new Error(
        `${cwd}: git filter driver ${JSON.stringify(name)} has a name that cannot be switched off on the command line`,
      );
    settings.push(
      `filter.${name}.clean=`,
      `filter.${name}.smudge=`,
      `filter.${name}.process=`,
      `filter.${name}.required=false`,
    );
  }
  return settings;
}

/**
 * Whether tracked files differ from HEAD in the work tree or the index. `git status` compares
 * content, so it runs here with every filter driver off and without writing the index; a file a
 * filter would have cleaned may then show as changed. True when that cannot be done safely.
 */
export function dirtyWorkTree(root: string): boolean {
  try {
    const output = runGitSync(
      root,
      ['status', '--porcelain', '--untracked-files=no', '--ignore-submodules=all', '--no-renames'],
      filterOverrides(root),
    );
    return output.trim().length > 0;
  } catch {
    return true;
  }
}
