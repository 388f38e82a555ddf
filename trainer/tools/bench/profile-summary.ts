import * as fs from 'node:fs';
import * as path from 'node:path';
import { round } from '../../util/round';

// ONNX Runtime's profile (what `--profile <prefix>` makes it write) summed by op type, per run:
// how much of a step is matrix products and where the rest goes.

interface ProfileEvent {
  cat?: string;
  name?: string;
  dur?: number;
  args?: { op_name?: string };
}

interface ProfileSummary {
  file: string;
  runs: number;
  /** Σ kernel time per run, ms. */
  kernelMsPerRun: number;
  /** Share of the kernel time in MatMul and FusedMatMul. */
  matmulShare: number;
  /** Kernel ms per run by op type, largest first. */
  byOp: Record<string, number>;
}

const MATMUL_OPS = new Set(['MatMul', 'FusedMatMul', 'Gemm']);

/** The newest `<prefix>_*.json` ORT wrote, or undefined when there is none. */
export function newestProfile(prefix: string): string | undefined {
  const dir = path.dirname(path.resolve(prefix));
  const stem = `${path.basename(prefix)}_`;
  let newest: { file: string; mtime: number } | undefined;
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    if (!name.startsWith(stem) || !name.endsWith('.json')) continue;
    const file = path.join(dir, name);
    const mtime = fs.statSync(file).mtimeMs;
    if (!newest || mtime > newest.mtime) newest = { file, mtime };
  }
  return newest?.file;
}

export function summarizeProfile(file: string): ProfileSummary {
  let events: ProfileEvent[];
  try {
    events = JSON.parse(fs.readFileSync(file, 'utf8')) as ProfileEvent[];
  } catch (error) {
    throw new Error(`${file}: not an ONNX Runtime profile (${(error as Error).message})`);
  }
  if (!Array.isArray(events)) throw new Error(`${file}: not an ONNX Runtime profile (no event list)`);
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').length;
  const micros = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name) continue;
    micros.set(e.args.op_name, (micros.get(e.args.op_name) ?? 0) + (e.dur ?? 0));
  }
  const perRun = Math.max(1, runs);
  const total = [...micros.values()].reduce((a, b) => a + b, 0);
  const matmul = [...micros].filter(([op]) => MATMUL_OPS.has(op)).reduce((a, [, us]) => a + us, 0);
  const byOp = Object.fromEntries(
    [...micros].sort((a, b) => b[1] - a[1]).map(([op, us]) => [op, round(us / perRun / 1000, 2)]),
  );
  return {
    file,
    runs,
    kernelMsPerRun: round(total / perRun / 1000, 1),
    matmulShare: total > 0 ? round(matmul / total, 3) : 0,
    byOp,
  };
}
