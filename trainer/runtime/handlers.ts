import { sessionHandlers } from './session-handlers';

// Every method the engine worker serves: one spread per area. Each handler runs inside the
// worker; its module keeps that area's sessions and state. Add an area with one line.
export const handlers = {
  ...sessionHandlers,
};

export type Handlers = typeof handlers;
export type HandlerName = keyof Handlers;
