import * as vscode from 'vscode';
import type { StatusResult } from '../server/protocol';

// The drift watch as the editor shows it: the status bar names how far the code moved on since the
// serving adapter was trained ("12 commits behind, +9% loss"), and once per adapter and HEAD a
// notification offers Retrain.

/** The drift line when the serving adapter has drifted past the thresholds, else null. */
export function driftWarning(status: StatusResult): string | null {
  const drift = status.drift;
  if (!drift?.drifted || !status.adapter || status.combination || drift.adapterId !== status.adapter.id) return null;
  return drift.message;
}

/** Whether Retrain can continue the active adapter (`--from active`): a LoRA adapter serves alone. */
export function canContinue(status: StatusResult | undefined): boolean {
  return !!status?.adapter && !status.combination && status.adapter.training?.method === 'lora';
}

const offered = new Set<string>();

/** Offers Retrain once for each drifted adapter at each HEAD. */
export function offerRetrain(status: StatusResult): void {
  const warning = driftWarning(status);
  if (!warning || !status.trusted || status.training) return;
  const key = `${status.drift!.adapterId}@${status.drift!.head}`;
  if (offered.has(key)) return;
  offered.add(key);
  void vscode.window
    .showInformationMessage(`Idiom: the adapter is ${warning} since it was trained.`, 'Retrain')
    .then((choice) => choice === 'Retrain' && vscode.commands.executeCommand('idiom.retrain'));
}
