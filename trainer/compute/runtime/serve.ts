import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { HandlerName, WorkerHandlers } from './handlers';
import { type Request, type Response, type WorkerData, collectTransferables } from './protocol';

// The engine worker's request loop: every ONNX Runtime call runs here, off the main thread (run()
// blocks its thread for the whole step). Requests are answered in order of completion. The entry
// that calls it with every area's handlers is trainer/worker.ts.

export function serveRequests(handlers: WorkerHandlers): void {
  if (isMainThread || !parentPort)
    throw new Error('trainer/worker is the engine worker entry; start it with EngineWorker.start()');
  const port = parentPort;
  const stopFlag = (workerData as WorkerData | undefined)?.stopFlag;

  function post(response: Response, transfer: ArrayBuffer[]): void {
    try {
      port.postMessage(response, transfer);
    } catch {
      // A buffer that cannot move (shared with a live session, or a view into a larger pool) is copied.
      port.postMessage(response);
    }
  }

  port.on('message', async (request: Request) => {
    const { id, method, args } = request;
    if (stopFlag && Atomics.load(stopFlag, 0) === 1) {
      post({ id, error: { message: 'engine worker terminated' } }, []);
      return;
    }
    try {
      const handler = handlers[method as HandlerName] as ((...a: unknown[]) => Promise<unknown>) | undefined;
      if (typeof handler !== 'function') throw new Error(`engine worker has no method ${method}`);
      const result = await handler(...args);
      post({ id, result }, [...collectTransferables(result)]);
    } catch (error) {
      const e = error instanceof Error ? error : new Error(String(error));
      post({ id, error: { message: e.message, stack: e.stack } }, []);
    }
  });
}
