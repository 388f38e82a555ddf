import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../../model/base-model';

// Where the PyTorch backend lives and whether this machine can run it: a Python 3 that imports
// torch (and whether that torch sees a CUDA device). Probed in a child process with a timeout,
// because importing torch (and initialising CUDA) can take seconds or hang on a broken driver.

export interface TorchAvailable {
  ok: true;
  /** The interpreter that imported torch. */
  python: string;
  pythonVersion: string;
  torchVersion: string;
  cuda: boolean;
  /** CUDA device names (empty on CPU builds). */
  devices: string[];
}

export interface TorchUnavailable {
  ok: false;
  /** One line: why the PyTorch backend cannot run here. */
  reason: string;
}

export type TorchProbe = TorchAvailable | TorchUnavailable;

export interface ProbeOptions {
  /** Interpreter to use; default $IDIOM_PYTHON, else python3 on PATH, else /usr/bin/python3. */
  python?: string;
  /** Per interpreter; default 30 s (a cold CUDA initialisation is slow). */
  timeoutMs?: number;
}

const PROBE_SCRIPT = [
  'import json, sys',
  'r = {"python": sys.version.split()[0]}',
  'try:',
  '    import torch',
  '    r["torch"] = torch.__version__',
  '    r["cuda"] = bool(torch.cuda.is_available())',
  '    r["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if r["cuda"] else []',
  'except Exception as e:',
  '    r["error"] = (type(e).__name__ + ": " + str(e)).splitlines()[0]',
  'print(json.dumps(r))',
].join('\n');

/** Interpreters to try, in order (a pyenv or venv python3 may lack Debian's python3-torch). */
export function pythonCandidates(explicit?: string): string[] {
  const chosen = explicit ?? process.env.IDIOM_PYTHON;
  if (chosen) return [chosen];
  const list = ['python3'];
  if (fs.existsSync('/usr/bin/python3')) list.push('/usr/bin/python3');
  return list;
}

const cache = new Map<string, Promise<TorchProbe>>();

/** Whether PyTorch can run here, and on what; memoised per interpreter list and timeout. */
export function probeTorch(options: ProbeOptions = {}): Promise<TorchProbe> {
  const candidates = pythonCandidates(options.python);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const key = `${candidates.join('\0')}\0${timeoutMs}`;
  let probe = cache.get(key);
  if (!probe) {
    probe = probeCandidates(candidates, timeoutMs);
    cache.set(key, probe);
  }
  return probe;
}

async function probeCandidates(candidates: string[], timeoutMs: number): Promise<TorchProbe> {
  const failures: string[] = [];
  for (const python of candidates) {
    const result = await probeOne(python, timeoutMs);
    if (result.ok) return result;
    failures.push(result.reason);
  }
  return { ok: false, reason: failures.join('; ') };
}

function probeOne(python: string, timeoutMs: number): Promise<TorchProbe> {
  return new Promise((resolve) => {
    execFile(
      python,
      ['-c', PROBE_SCRIPT],
      { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 1 << 20 },
      (error, stdout) => {
        if (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') return resolve({ ok: false, reason: `${python}: not found (install Python 3)` });
          if (error.killed)
            return resolve({
              ok: false,
              reason: `${python}: importing torch took longer than ${Math.round(timeoutMs / 1000)} s`,
            });
          return resolve({ ok: false, reason: `${python}: probe failed (${firstLine(error.message)})` });
        }
        let parsed: { python?: string; torch?: string; cuda?: boolean; devices?: string[]; error?: string };
        try {
          parsed = JSON.parse(stdout.trim().split('\n').pop() ?? '');
        } catch {
          return resolve({ ok: false, reason: `${python}: probe printed no JSON` });
        }
        if (!parsed.torch)
          return resolve({
            ok: false,
            reason: `${python} (${parsed.python ?? '?'}) has no PyTorch (${parsed.error ?? 'import torch failed'})`,
          });
        resolve({
          ok: true,
          python,
          pythonVersion: parsed.python ?? '',
          torchVersion: parsed.torch,
          cuda: parsed.cuda === true,
          devices: parsed.devices ?? [],
        });
      },
    );
  });
}

/** trainer/training/torch/ (serve.py, train.py, …): $IDIOM_TORCH_DIR, else inside the idiom package. */
export function torchBackendDir(): string {
  const fromEnv = process.env.IDIOM_TORCH_DIR;
  const candidates = fromEnv ? [fromEnv] : [];
  const root = packageRoot();
  if (root) candidates.push(path.join(root, 'trainer', 'training', 'torch'));
  candidates.push(path.join(__dirname, '..', 'torch'));
  for (const dir of candidates) if (fs.existsSync(path.join(dir, 'serve.py'))) return path.resolve(dir);
  throw new Error(
    'the PyTorch backend scripts (trainer/training/torch/serve.py) are not installed with this build; set IDIOM_TORCH_DIR',
  );
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .find((line) => line.trim().length > 0)
      ?.trim() ?? text
  );
}
