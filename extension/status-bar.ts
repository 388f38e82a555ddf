import * as vscode from 'vscode';
import { labelWithAge, type StatusResult } from '../server/protocol';
import { driftWarning } from './drift';

const icons: Record<StatusResult['state'], string> = {
  starting: '$(loading~spin)',
  loading: '$(loading~spin)',
  training: '$(sync~spin)',
  ready: '$(sparkle)',
  'no-model': '$(circle-slash)',
  disabled: '$(circle-slash)',
  error: '$(error)',
};

/** One status bar item: mode, adapter and state; a click opens Idiom's menu. */
export class IdiomStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('idiom.status', vscode.StatusBarAlignment.Right, 100);
  private last: StatusResult | null = null;
  /** The adapter's age ("2 h ago") moves on without a status change. */
  private readonly ageTimer = setInterval(() => this.last && this.show(this.last), 60_000);

  constructor() {
    this.item.name = 'Idiom';
    this.item.command = 'idiom.showMenu';
    this.show({
      state: 'starting',
      mode: 'complete',
      model: null,
      adapter: null,
      training: null,
      trusted: vscode.workspace.isTrusted,
      message: 'starting the language server',
    });
    this.item.show();
  }

  show(status: StatusResult): void {
    this.last = status;
    // The label (method, rank, commit, age) tells adapters apart; the id is in the tooltip.
    const adapter =
      status.combination?.label ??
      (status.adapter ? labelWithAge(status.adapter.label ?? status.adapter.id, status.adapter.created) : 'base');
    const state = status.training
      ? `training${status.training.fraction === null ? '' : ` ${Math.round(status.training.fraction * 100)}%`}`
      : status.state;
    const drift = driftWarning(status);
    const endpointDown = status.endpoint?.state === 'down' ? status.endpoint : null;
    const icon = status.adapterProblem || drift || endpointDown ? '$(warning)' : icons[status.state];
    this.item.text = `${icon} Idiom: ${status.mode} · ${adapter} · ${state}${drift ? ` · ${drift}` : ''}${endpointDown ? ' · endpoint down' : ''}`;
    this.item.tooltip = new vscode.MarkdownString(
      [
        `**Idiom** — ${status.message}`,
        status.adapterProblem ? `⚠ ${status.adapterProblem}` : '',
        drift ? `⚠ ${drift} since the adapter was trained: Retrain from the menu` : '',
        endpointDown
          ? `⚠ endpoint ${endpointDown.url} is down (${endpointDown.message}); the local model serves`
          : status.endpoint
            ? `completions from ${status.endpoint.url} (${status.endpoint.kind})`
            : '',
        `mode: ${status.mode}`,
        `model: ${status.model?.name ?? 'none'}`,
        `adapter: ${adapter}${status.adapter && !status.combination ? ` (${status.adapter.id})` : ''}`,
        'click for the menu',
        status.trusted ? '' : 'untrusted workspace: training and custom models are off',
      ]
        .filter((line) => line !== '')
        .join('\n\n'),
    );
    this.item.backgroundColor =
      status.state === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : status.adapterProblem || drift || endpointDown
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    clearInterval(this.ageTimer);
    this.item.dispose();
  }
}
