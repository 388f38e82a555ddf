import * as vscode from 'vscode';
import { AdaptersReportRequest, labelWithAge, type AdapterSummary } from '../server/protocol';
import type { Ctx } from './ctx';
import { pipelineReportHtml } from './report';

// What tells adapters apart in Show adapters, and Idiom: Show adapter history: the page with
// held-out loss, replay and acceptance per adapter version over time (idiom/adaptersReport).

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** `LoRA r16 · 1a2b3c4 · 2 h ago`, or the id where the manifest could not be read. */
export function adapterTitle(adapter: AdapterSummary): string {
  return adapter.label ? labelWithAge(adapter.label, adapter.created) : adapter.id;
}

/** The numbers that differ between adapters: loss against the base, replay, acceptance. */
export function adapterNumbers(adapter: AdapterSummary): string {
  if (adapter.problem) return `unusable: ${adapter.problem}`;
  const parts: string[] = [];
  const loss = adapter.metrics?.adapter?.loss;
  const base = adapter.metrics?.base?.loss;
  if (loss !== undefined) {
    const relative = base ? loss / base - 1 : null;
    parts.push(
      `held-out loss ${loss.toFixed(3)}${relative === null ? '' : ` (${relative > 0 ? '+' : ''}${pct(relative)} vs base)`}`,
    );
  }
  const quality = adapter.metrics?.quality;
  if (quality) parts.push(`replay ${pct(quality.candidate.acceptedCharShare)} of characters accepted`);
  const acceptance = adapter.acceptance;
  if (acceptance && acceptance.shown > 0)
    parts.push(
      `accepted ${acceptance.accepted}/${acceptance.shown} shown (${pct(acceptance.rate ?? 0)}), ${acceptance.acceptedChars} chars`,
    );
  else parts.push('no suggestions shown yet');
  return parts.join(' · ');
}

export function showAdapterHistory(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    try {
      const { html } = await ctx
        .requireClient()
        .sendRequest(AdaptersReportRequest, { root: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath });
      const panel = vscode.window.createWebviewPanel(
        'idiom.adapterHistory',
        'Idiom: adapters over time',
        vscode.ViewColumn.Active,
        { enableScripts: true, localResourceRoots: [] },
      );
      panel.webview.html = pipelineReportHtml(html);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      ctx.output.error(`showAdapterHistory: ${message}`);
      void vscode.window.showErrorMessage(`Idiom: ${message}`);
    }
  };
}
