import * as vscode from 'vscode';
import { WorkDoneProgress, type WorkDoneProgressBegin, type WorkDoneProgressReport } from 'vscode-languageclient/node';
import { DownloadModelRequest, ModelsRequest, type LocalModel } from '../server/protocol';
import type { Ctx } from './ctx';

// Idiom: Choose base model. Lists the models the server finds on this machine (the Hugging Face
// cache, idiom.baseModelPath, the embedded one) with their size, memory and FIM support; picking
// one sets idiom.baseModelPath. Downloading from the Hub happens only from the item that says so.

const ID_AND_REVISION = /^([A-Za-z0-9][\w.-]*\/)?[A-Za-z0-9][\w.-]*(@[\w./-]+)?$/;

function gigabytes(bytes: number | null): string {
  if (bytes === null) return '?';
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${Math.max(1, Math.round(bytes / 1e6))} MB`;
}

function parameters(count: number | null): string {
  if (count === null) return '? params';
  return count >= 1e9 ? `${(count / 1e9).toFixed(2)}B params` : `${Math.max(1, Math.round(count / 1e6))}M params`;
}

function describe(model: LocalModel): string {
  return [
    parameters(model.parameters),
    model.dtype ?? '?',
    `${gigabytes(model.memoryBytes)} RAM at ${model.precision} (int8: ${gigabytes(model.int8MemoryBytes)})`,
    model.fim ? `FIM: ${model.fim}` : 'no FIM',
  ].join(' · ');
}

/** Sets idiom.baseModelPath where it is set now (a workspace value would hide a user-level one). */
async function useModel(ctx: Ctx, model: LocalModel): Promise<void> {
  if (model.problem) throw new Error(`${model.id} cannot serve completions here: ${model.problem}`);
  const config = vscode.workspace.getConfiguration('idiom');
  const target =
    config.inspect<string>('baseModelPath')?.workspaceValue !== undefined
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
  await config.update('baseModelPath', model.source === 'embedded' ? '' : model.path, target);
  ctx.output.info(`base model: ${model.id} (${model.path})`);
  void vscode.window.setStatusBarMessage(`Idiom: loading ${model.id}`, 3000);
}

async function download(ctx: Ctx): Promise<void> {
  const client = ctx.requireClient();
  const answer = await vscode.window.showInputBox({
    title: 'Download a model from the Hugging Face Hub',
    prompt: 'Model id, optionally @revision: safetensors weights, config and tokenizer go into the Hugging Face cache',
    placeHolder: 'Qwen/Qwen2.5-Coder-0.5B',
    validateInput: (value) => (ID_AND_REVISION.test(value.trim()) ? null : 'Org/Name, e.g. Qwen/Qwen2.5-Coder-0.5B'),
  });
  if (!answer) return;
  const [id, revision] = answer.trim().split('@');
  const workDoneToken = `idiom-download-${Date.now()}`;
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Idiom: downloading ${id}`, cancellable: true },
    async (progress, token) => {
      let reported = 0;
      const listener = client.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
        if (value.kind === 'end') return;
        const update = value as WorkDoneProgressBegin | WorkDoneProgressReport;
        const increment = update.percentage === undefined ? undefined : Math.max(0, update.percentage - reported);
        if (update.percentage !== undefined) reported = update.percentage;
        progress.report({ message: update.message, increment });
      });
      try {
        return await client.sendRequest(DownloadModelRequest, { id, revision, workDoneToken }, token);
      } finally {
        listener.dispose();
      }
    },
  );
  const resumed = result.resumed.length > 0 ? ` (resumed ${result.resumed.join(', ')})` : '';
  void vscode.window.showInformationMessage(`Idiom: downloaded ${id}${resumed}`);
  await useModel(ctx, result.model);
}

export function chooseBaseModel(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    try {
      const { models, memory, downloads } = await ctx.requireClient().sendRequest(ModelsRequest, {});
      type Item = vscode.QuickPickItem & { model?: LocalModel; download?: boolean };
      const serving = ctx.lastStatus?.model?.path;
      const items: Item[] = models.map((model) => ({
        label: `${model.problem ? '$(error)' : model.path === serving ? '$(check)' : '$(circle-large-outline)'} ${model.id}${model.refs.length > 0 ? `@${model.refs.join(',')}` : ''}`,
        description: describe(model),
        detail: model.problem ?? model.path,
        model,
      }));
      if (downloads)
        items.push(
          { label: '', kind: vscode.QuickPickItemKind.Separator },
          { label: '$(cloud-download) Download from Hugging Face…', download: true },
        );
      const picked = await vscode.window.showQuickPick(items, {
        title: `Idiom: base model (${gigabytes(memory.total)} memory, ${gigabytes(memory.available)} free)`,
        placeHolder: 'Choose the model that serves completions',
        matchOnDescription: true,
        matchOnDetail: true,
      });
      if (picked?.download) await download(ctx);
      else if (picked?.model) await useModel(ctx, picked.model);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      ctx.output.error(`chooseBaseModel: ${message}`);
      void vscode.window.showErrorMessage(`Idiom: ${message}`);
    }
  };
}
