// Entry of the training child process the language server forks: one trainRepository run, its
// progress sent to the parent as it comes. A separate process, not a thread: mining, graph
// building and ORT's training steps never touch the server's event loop, a crash (or the memory
// of a large run) stays here, and the server kills the process if a cancel is not honoured.

import { TrainingCancelledError } from '../../trainer/training/pipeline/events';
import { trainRepository } from '../../trainer/training/pipeline/train-repository';
import type { FromTrainer, ToTrainer } from './messages';

function send(message: FromTrainer): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, undefined, () => resolve());
  });
}

const controller = new AbortController();
let started = false;

process.on('message', (message: ToTrainer) => {
  if (message.type === 'cancel') controller.abort();
  else if (message.type === 'start' && !started) {
    started = true;
    void run(message);
  }
});
// The server went away: stop at the next step (a checkpoint is written) rather than train for nobody.
process.on('disconnect', () => controller.abort());

async function run(message: Extract<ToTrainer, { type: 'start' }>): Promise<void> {
  try {
    const result = await trainRepository({
      ...message.options,
      signal: controller.signal,
      onProgress: (event) => void send({ type: 'progress', event }),
    });
    await send({
      type: 'result',
      result: {
        adapter: result.adapter,
        activated: result.activated,
        promotionReason: result.promotion.reason,
        tokens: result.tokens,
        seconds: result.seconds,
        steps: result.steps,
        report: result.report,
      },
    });
  } catch (error) {
    if (error instanceof TrainingCancelledError)
      await send({ type: 'cancelled', message: error.message, checkpoint: error.checkpoint });
    else await send({ type: 'error', message: error instanceof Error ? error.message : String(error) });
  }
  process.disconnect?.();
  process.exit(0);
}
