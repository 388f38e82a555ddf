// SIGINT and SIGTERM end every command. A command that can stop cleanly (train: finish the
// step, write a checkpoint) registers a handler for the first signal; without one, or on a
// second signal, or when a SIGTERM's clean stop takes too long, the process exits at once with
// 128 + the signal's number, after one line on stderr. (A person at Ctrl-C presses it again.)

const SIGNALS = { SIGINT: 2, SIGTERM: 15 } as const;
type StopSignal = keyof typeof SIGNALS;

/** How long a clean stop after SIGTERM may take before the process exits anyway. */
export const CLEAN_STOP_MS = 30_000;

const handlers = new Set<(signal: StopSignal) => void>();
let installed = false;
let received = 0;

/** Runs `handler` on the first SIGINT/SIGTERM instead of exiting; returns the unregister function. */
export function onInterrupt(handler: (signal: StopSignal) => void): () => void {
  handlers.add(handler);
  return () => handlers.delete(handler);
}

function quit(signal: StopSignal, why: string): never {
  process.stderr.write(`idiom: stopped by ${signal}${why}\n`);
  process.exit(128 + SIGNALS[signal]);
}

export function installInterruptHandlers(): void {
  if (installed) return;
  installed = true;
  for (const signal of Object.keys(SIGNALS) as StopSignal[]) {
    process.on(signal, () => {
      received++;
      if (received > 1 || handlers.size === 0) quit(signal, '');
      for (const handler of [...handlers]) handler(signal);
      if (signal === 'SIGTERM')
        setTimeout(() => quit(signal, ` (no clean stop within ${CLEAN_STOP_MS / 1000} s)`), CLEAN_STOP_MS).unref();
    });
  }
}
