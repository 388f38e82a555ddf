import * as vscode from 'vscode';
import { AdaptersRequest, CombineAdaptersRequest, type AdapterSummary, type AdapterWeight } from '../server/protocol';
import { readSettings } from './config';
import type { Ctx } from './ctx';

// Idiom: Combine adapters: pick LoRA adapters, give each a weight, and the server serves them as one
// for the rest of the session (idiom/combineAdapters). Picking none serves the active adapter again.

/** A weight as typed, or why not (InputBox validation). */
function weightProblem(text: string): string | null {
  return text.trim() !== '' && Number.isFinite(Number(text)) ? null : 'a number, e.g. 1 or 0.5';
}

async function pickCombination(ctx: Ctx): Promise<AdapterWeight[] | undefined> {
  const client = ctx.requireClient();
  const { adapters } = await client.sendRequest(AdaptersRequest, {
    root: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
  });
  const lora = adapters.filter((adapter) => adapter.training?.method === 'lora' && !adapter.problem);
  if (lora.length === 0) throw new Error('no LoRA adapters to combine yet: run Idiom: Retrain on this repository');
  const current = ctx.lastStatus?.combination?.adapters ?? [];
  type Item = vscode.QuickPickItem & { adapter: AdapterSummary };
  const items: Item[] = lora.map((adapter) => ({
    label: adapter.id,
    description: `${adapter.label ?? ''} ${adapter.mode}${adapter.active ? ' · active' : ''}`.trim(),
    picked: current.some((part) => part.id === adapter.id),
    adapter,
  }));
  const picked = await vscode.window.showQuickPick(items, {
    canPickMany: true,
    placeHolder: 'Adapters to serve together (none: the active adapter alone)',
  });
  if (!picked) return undefined;
  const parts: AdapterWeight[] = [];
  for (const item of picked) {
    const previous = current.find((part) => part.id === item.adapter.id)?.weight ?? 1;
    const text = await vscode.window.showInputBox({
      title: `Weight of ${item.adapter.id}`,
      prompt: 'Multiplies its update: 1 as trained, 0.5 half of it',
      value: String(previous),
      validateInput: weightProblem,
    });
    if (text === undefined) return undefined;
    parts.push({ id: item.adapter.id, weight: Number(text) });
  }
  return parts;
}

export function combineAdapters(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    try {
      const parts = await pickCombination(ctx);
      if (!parts) return;
      const mode = ctx.lastStatus?.mode ?? readSettings().mode;
      const result = await ctx.requireClient().sendRequest(CombineAdaptersRequest, { mode, adapters: parts });
      ctx.showStatus(result.status);
      const serving = result.combination?.label ?? result.status.adapter?.id ?? 'the base model';
      void vscode.window.setStatusBarMessage(`Idiom: ${mode} serves ${serving}`, 4000);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      ctx.output.error(`combineAdapters: ${message}`);
      void vscode.window.showErrorMessage(`Idiom: ${message}`);
    }
  };
}
