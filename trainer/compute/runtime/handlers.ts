import { trainingHandlers } from '../../training/ort/handlers';
import { generationHandlers } from '../engine/generation-handlers';
import { sessionHandlers } from './session-handlers';
import { evalHandlers } from '../../training/eval/handlers';

// Every method the engine worker serves: one spread per area. Each handler runs inside the
// worker; its module keeps that area's sessions and state. Add an area with one line.
export const handlers = {
  ...sessionHandlers,
  ...generationHandlers,
  ...trainingHandlers,
  ...evalHandlers,
};

export type Handlers = typeof handlers;
export type HandlerName = keyof Handlers;
