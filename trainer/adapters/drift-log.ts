// .idiom/drift.jsonl: the drift readings the language server took of the adapter serving a mode,
// one JSON object a line (when, which adapter, at which HEAD, commits behind, loss rise against
// the base), so the adapters report can show drift per version over time. Appended and read like
// stats.jsonl: a damaged line is skipped, the rest still counts.

import * as path from 'node:path';
import { appendLogLine, readLogTail } from './stats';

export const DRIFT_FILE = 'drift.jsonl';

export interface DriftReading {
  /** ISO 8601. */
  at: string;
  adapter: string;
  head: string | null;
  commitsBehind: number | null;
  /** The loss rise against the base (training/eval/drift.ts); null when nothing was scored. */
  lossIncrease: number | null;
  drifted: boolean;
}

function parseReading(line: string): DriftReading | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  const r = value as Record<string, unknown> | null;
  const numberOrNull = (x: unknown) => x === null || (typeof x === 'number' && Number.isFinite(x));
  if (
    !r ||
    typeof r.at !== 'string' ||
    Number.isNaN(Date.parse(r.at)) ||
    typeof r.adapter !== 'string' ||
    !(r.head === null || typeof r.head === 'string') ||
    !numberOrNull(r.commitsBehind) ||
    !numberOrNull(r.lossIncrease) ||
    typeof r.drifted !== 'boolean'
  )
    return null;
  return {
    at: r.at,
    adapter: r.adapter,
    head: r.head as string | null,
    commitsBehind: r.commitsBehind as number | null,
    lossIncrease: r.lossIncrease as number | null,
    drifted: r.drifted,
  };
}

/** Every reading in the file, oldest first, and how many damaged lines were skipped. */
export function readDriftReadings(registryDir: string): { readings: DriftReading[]; skipped: number } {
  const readings: DriftReading[] = [];
  let skipped = 0;
  for (const line of readLogTail(path.join(registryDir, DRIFT_FILE)).text.split('\n')) {
    if (line.trim() === '') continue;
    const reading = parseReading(line);
    if (reading) readings.push(reading);
    else skipped++;
  }
  return { readings, skipped };
}

export function appendDriftReading(registryDir: string, reading: DriftReading): void {
  appendLogLine(path.join(registryDir, DRIFT_FILE), `${JSON.stringify(reading)}\n`);
}
