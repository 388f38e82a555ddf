// Child process for the registry tests: changes the registry as fast as it can.
//   node --import tsx hammer.ts REPO MODE COUNT [START_AT]   (COUNT -1: until killed; START_AT: epoch ms
//   to wait for, so that several hammers overlap)
// Step k of a mode activates ids[k % ids.length] with reason "hammer k", where k is the number of
// history entries of that mode so far; only this process writes MODE, so every step is a change
// and the registry after k steps is fully determined. Prints "ready" after the first step.

import { Registry } from '../../../trainer/adapters/registry';
import type { Mode } from '../../../trainer/adapters/mode';

async function main(): Promise<void> {
  const [repo, mode, countText, startAtText] = process.argv.slice(2);
  const count = Number(countText);
  const registry = await Registry.open(repo, { lockStaleMs: 2000, excludeFromGit: false });
  const ids = await registry.ids();
  if (startAtText) await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(startAtText) - Date.now())));
  for (let step = 0; count < 0 || step < count; step++) {
    const state = await registry.readState();
    const k = state.history.filter((entry) => entry.mode === mode).length;
    await registry.activate(ids[k % ids.length], mode as Mode, { reason: `hammer ${k}` });
    if (step === 0) process.stdout.write('ready\n');
  }
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).message}\n`);
  process.exitCode = 1;
});
