// Messages between EngineWorker (client.ts) and the worker's request loop (serve.ts).

export interface Request {
  id: number;
  method: string;
  args: unknown[];
}

/** What EngineWorker.start passes to the worker thread. */
export interface WorkerData {
  stopFlag: Int32Array;
}

export type Response = { id: number; result: unknown } | { id: number; error: { message: string; stack?: string } };

/** The ArrayBuffers under a result (typed arrays of tensors), so they move instead of copying. */
export function collectTransferables(value: unknown, into: Set<ArrayBuffer> = new Set(), depth = 0): Set<ArrayBuffer> {
  if (depth > 8 || value === null || typeof value !== 'object') return into;
  if (ArrayBuffer.isView(value)) {
    if (value.buffer instanceof ArrayBuffer) into.add(value.buffer);
    return into;
  }
  if (value instanceof ArrayBuffer) {
    into.add(value);
    return into;
  }
  const entries =
    value instanceof Map ? value.values() : Array.isArray(value) ? value.values() : Object.values(value).values();
  for (const item of entries) collectTransferables(item, into, depth + 1);
  return into;
}
