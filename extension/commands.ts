import * as vscode from 'vscode';
import { WorkDoneProgress, type WorkDoneProgressBegin, type WorkDoneProgressReport } from 'vscode-languageclient/node';
import {
  ActivateRequest,
  AdaptersRequest,
  CancelTrainingRequest,
  MODES,
  RollbackRequest,
  SetModeRequest,
  SuggestionAcceptedNotification,
  suggestionAcceptedCommand,
  TrainRequest,
  type AdapterSummary,
  type Mode,
} from '../server/protocol';
import { chooseBaseModel } from './choose-model';
import type { ContributedCommand } from './command-ids';
import { combineAdapters } from './combine';
import { setEndpointKey } from './endpoint';
import { fetchAdapters, publishAdapter } from './sharing';
import { readSettings } from './config';
import { canContinue, driftWarning } from './drift';
import type { Ctx } from './ctx';
import { adapterNumbers, adapterTitle, showAdapterHistory } from './adapter-history';
import { pipelineReportHtml, trainingReportHtml } from './report';

export type Cmd = (...args: unknown[]) => unknown;

async function readText(file: string): Promise<string | null> {
  try {
    return new TextDecoder().decode(await vscode.workspace.fs.readFile(vscode.Uri.file(file)));
  } catch {
    return null;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Runs a command body; any failure becomes one error notification (and a line in the output). */
function guarded(ctx: Ctx, name: string, body: () => Promise<unknown>): Cmd {
  return async () => {
    try {
      return await body();
    } catch (error) {
      ctx.output.error(`${name}: ${errorMessage(error)}`);
      void vscode.window.showErrorMessage(`Idiom: ${errorMessage(error)}`);
      return undefined;
    }
  };
}

export function retrain(ctx: Ctx): Cmd {
  return guarded(ctx, 'retrain', async () => {
    if (!vscode.workspace.isTrusted) throw new Error('training is disabled in an untrusted workspace');
    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new Error('open a folder to train on its repository');
    const client = ctx.requireClient();
    const settings = readSettings();
    const workDoneToken = `idiom-train-${Date.now()}`;
    const result = await vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: 'Idiom: training on this repository',
        cancellable: true,
      },
      async (progress, token) => {
        let reported = 0;
        const listener = client.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
          if (value.kind === 'end') return;
          const update = value as WorkDoneProgressBegin | WorkDoneProgressReport;
          const percentage = update.percentage;
          const increment = percentage === undefined ? undefined : Math.max(0, percentage - reported);
          if (percentage !== undefined) reported = percentage;
          progress.report({ message: update.message, increment });
        });
        token.onCancellationRequested(() => void client.sendRequest(CancelTrainingRequest, {}).catch(() => undefined));
        try {
          return await client.sendRequest(
            TrainRequest,
            {
              root: folder.uri.fsPath,
              minutes: settings.training.minutes,
              lora: settings.lora,
              ...(settings.training.incremental && canContinue(ctx.lastStatus) ? { from: 'active' } : {}),
              device: settings.device,
              workDoneToken,
            },
            token,
          );
        } finally {
          listener.dispose();
        }
      },
    );
    const verdict = result.activated ? 'activated' : 'not activated';
    ctx.output.info(
      `trained ${result.adapter.id}: ${result.reason}${result.report ? ` (report: ${result.report})` : ''}`,
    );
    void vscode.window.showInformationMessage(
      `Idiom: trained ${result.adapter.id} in ${Math.round(result.seconds)} s — ${verdict}: ${result.reason}`,
    );
  });
}

export function showAdapters(ctx: Ctx): Cmd {
  return guarded(ctx, 'showAdapters', async () => {
    const client = ctx.requireClient();
    const { adapters } = await client.sendRequest(AdaptersRequest, {
      root: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
    });
    type Item = vscode.QuickPickItem & { adapter?: AdapterSummary; rollback?: boolean };
    const items: Item[] = adapters.map((adapter) => ({
      label: `${adapter.active ? '$(check) ' : ''}${adapterTitle(adapter)}`,
      description: `${adapter.mode}${adapter.active ? ' · active' : ''} · ${adapter.id}`,
      detail: adapterNumbers(adapter),
      adapter,
    }));
    items.push({ label: '$(history) Roll back to the previous adapter', rollback: true });
    const picked = await vscode.window.showQuickPick(items, {
      matchOnDescription: true,
      placeHolder:
        adapters.length === 0 ? 'No adapters yet: run Idiom: Retrain on this repository' : 'Activate an adapter',
    });
    if (!picked) return;
    if (picked.rollback) await client.sendRequest(RollbackRequest, { mode: readSettings().mode });
    else if (picked.adapter)
      await client.sendRequest(ActivateRequest, { id: picked.adapter.id, mode: picked.adapter.mode });
  });
}

export function switchMode(ctx: Ctx): Cmd {
  return guarded(ctx, 'switchMode', async () => {
    const current = ctx.lastStatus?.mode ?? readSettings().mode;
    const picked = await vscode.window.showQuickPick(
      MODES.map((mode) => ({ label: mode, description: mode === current ? 'current' : undefined })),
      { placeHolder: 'Idiom mode' },
    );
    if (!picked) return;
    const mode = picked.label as Mode;
    const status = await ctx.requireClient().sendRequest(SetModeRequest, { mode });
    ctx.showStatus(status);
    await vscode.workspace.getConfiguration('idiom').update('mode', mode, vscode.ConfigurationTarget.Workspace);
  });
}

/** Flips `idiom.enable` for the user (as Copilot's toggle does); the server answers with its status. */
export function toggleCompletions(ctx: Ctx): Cmd {
  return guarded(ctx, 'toggleCompletions', async () => {
    const config = vscode.workspace.getConfiguration('idiom');
    const enable = !readSettings().enable;
    // A workspace value would hide a user-level change: flip it where it is set.
    const inspected = config.inspect<boolean>('enable');
    const target =
      inspected?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
    await config.update('enable', enable, target);
    void vscode.window.setStatusBarMessage(`Idiom: inline completions ${enable ? 'on' : 'off'}`, 3000);
  });
}

export function showTrainingReport(ctx: Ctx): Cmd {
  return guarded(ctx, 'showTrainingReport', async () => {
    const { adapters } = await ctx
      .requireClient()
      .sendRequest(AdaptersRequest, { root: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath });
    const adapter = adapters.find((candidate) => candidate.active) ?? adapters[0];
    if (!adapter) throw new Error('no adapter has been trained yet: run Idiom: Retrain on this repository');
    const pipelineReport = adapter.report && vscode.workspace.isTrusted ? await readText(adapter.report) : null;
    const panel = vscode.window.createWebviewPanel(
      'idiom.trainingReport',
      `Idiom: ${adapter.id}`,
      vscode.ViewColumn.Active,
      {
        enableScripts: pipelineReport !== null,
        localResourceRoots: [],
      },
    );
    panel.webview.html =
      pipelineReport !== null
        ? pipelineReportHtml(pipelineReport)
        : trainingReportHtml(adapter, panel.webview.cspSource);
  });
}

/** What a click on the status bar item offers (Copilot's and Continue's items open such a menu). */
export function showMenu(ctx: Ctx): Cmd {
  return guarded(ctx, 'showMenu', async () => {
    const enabled = readSettings().enable;
    const mode = ctx.lastStatus?.mode ?? readSettings().mode;
    const items: (vscode.QuickPickItem & { command: string })[] = [
      { label: '$(symbol-enum) Switch mode', description: `now ${mode}`, command: 'idiom.switchMode' },
      {
        label: enabled ? '$(circle-slash) Disable inline completions' : '$(check) Enable inline completions',
        command: 'idiom.toggleCompletions',
      },
      {
        label: '$(sync) Retrain on this repository',
        description: ctx.lastStatus ? (driftWarning(ctx.lastStatus) ?? undefined) : undefined,
        command: 'idiom.retrain',
      },
      { label: '$(versions) Show adapters', description: 'activate or roll back', command: 'idiom.showAdapters' },
      { label: '$(merge) Combine adapters', description: 'serve several as one', command: 'idiom.combineAdapters' },
      {
        label: '$(cloud-upload) Publish adapter',
        description: 'to the team, through git',
        command: 'idiom.publishAdapter',
      },
      {
        label: '$(cloud-download) Fetch team adapters',
        description: 'from the git remote',
        command: 'idiom.fetchAdapters',
      },
      { label: '$(graph) Show training report', command: 'idiom.showTrainingReport' },
      {
        label: '$(graph-line) Show adapter history',
        description: 'loss, replay and acceptance per version',
        command: 'idiom.showAdapterHistory',
      },
      { label: '$(output) Show output', command: 'idiom.showOutput' },
    ];
    const picked = await vscode.window.showQuickPick(items, {
      placeHolder: `Idiom: ${ctx.lastStatus?.message ?? 'starting'}`,
    });
    if (picked) await vscode.commands.executeCommand(picked.command);
  });
}

export function showOutput(ctx: Ctx): Cmd {
  return () => ctx.output.show(true);
}

export function restartServer(ctx: Ctx): Cmd {
  return guarded(ctx, 'restartServer', () => ctx.restart());
}

/** Run by VS Code when the user accepts a suggestion: the server counts it (and audits it in compliance mode). */
export function suggestionAccepted(ctx: Ctx): Cmd {
  return async (id: unknown) => {
    if (typeof id !== 'string') return;
    ctx.suggestions.tracker.accepted(id);
    if (!ctx.client?.isRunning()) return;
    await ctx.client
      .sendNotification(SuggestionAcceptedNotification, { id })
      .catch((error: unknown) => ctx.output.error(`suggestionAccepted: ${errorMessage(error)}`));
  };
}

/** Every command, registered before the server is up so none is ever "not found". */
export const commandFactories: Record<ContributedCommand | typeof suggestionAcceptedCommand, (ctx: Ctx) => Cmd> = {
  'idiom.retrain': retrain,
  'idiom.showAdapters': showAdapters,
  'idiom.switchMode': switchMode,
  'idiom.toggleCompletions': toggleCompletions,
  'idiom.showMenu': showMenu,
  'idiom.showTrainingReport': showTrainingReport,
  'idiom.showAdapterHistory': showAdapterHistory,
  'idiom.chooseBaseModel': chooseBaseModel,
  'idiom.showOutput': showOutput,
  'idiom.restartServer': restartServer,
  'idiom.combineAdapters': combineAdapters,
  'idiom.setEndpointKey': setEndpointKey,
  'idiom.publishAdapter': publishAdapter,
  'idiom.fetchAdapters': fetchAdapters,
  [suggestionAcceptedCommand]: suggestionAccepted,
};
