import { generationHandlers } from './compute/engine/generation-handlers';
import type { WorkerHandlers } from './compute/runtime/handlers';
import { serveRequests } from './compute/runtime/serve';
import { sessionHandlers } from './compute/runtime/session-handlers';
import { evalHandlers } from './training/eval/handlers';
import { trainingHandlers } from './training/ort/handlers';

// The engine worker's entry (EngineWorker.start() runs it; the bundle is dist/runtime/worker.js).
// It sits at the top of trainer/ because it loads every area's handlers, training included; each
// handler module keeps that area's sessions and state. Add an area with one spread.
const handlers: WorkerHandlers = {
  ...sessionHandlers,
  ...generationHandlers,
  ...trainingHandlers,
  ...evalHandlers,
};

serveRequests(handlers);
