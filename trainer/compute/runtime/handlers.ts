import type { sessionHandlers } from './session-handlers';

// Every method the engine worker serves. Each area above this layer adds its handlers' types from
// its own module (compute/engine/generation-handlers.ts, training/ort/handlers.ts,
// training/eval/handlers.ts) by extending this interface in a `declare module` block, so the
// runtime never imports the areas it serves. trainer/worker.ts assembles the handler values into
// one WorkerHandlers object; it fails to compile if an area is missing.
export interface WorkerHandlers extends SessionHandlers {}

type SessionHandlers = typeof sessionHandlers;

export type HandlerName = keyof WorkerHandlers;
