import * as vscode from 'vscode';
import { AdaptersRequest, FetchAdaptersRequest, labelWithAge, PublishAdapterRequest } from '../server/protocol';
import type { Ctx } from './ctx';

// Idiom: Publish adapter to the team / Fetch the team's adapters: the registry shared through the
// repository's own git remote (idiom/publishAdapter, idiom/fetchAdapters). Fetching activates
// nothing; the message offers Show adapters for that.

function failure(ctx: Ctx, name: string, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  ctx.output.error(`${name}: ${message}`);
  void vscode.window.showErrorMessage(`Idiom: ${message}`);
}

export function publishAdapter(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    try {
      const client = ctx.requireClient();
      const { adapters } = await client.sendRequest(AdaptersRequest, {});
      if (adapters.length === 0) throw new Error('no adapters to publish yet: run Idiom: Retrain first');
      const picked = await vscode.window.showQuickPick(
        adapters
          .filter((adapter) => !adapter.problem)
          .reverse()
          .map((adapter) => ({
            label: labelWithAge(adapter.label ?? adapter.id, adapter.created),
            description: adapter.active ? `active for ${adapter.mode}` : adapter.mode,
            detail: adapter.id,
            id: adapter.id,
          })),
        { title: 'Idiom: publish which adapter to the team (refs/idiom/adapters on origin)?' },
      );
      if (!picked) return;
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Idiom: publishing ${picked.label}` },
        () => client.sendRequest(PublishAdapterRequest, { id: picked.id }),
      );
      void vscode.window.showInformationMessage(
        result.published
          ? `Idiom: published ${picked.label} to ${result.remote} (${(result.bytes / 1e6).toFixed(1)} MB)` +
              (result.memoryLeftOut ? `; repository memory left out: ${result.memoryLeftOut}` : '')
          : `Idiom: ${picked.label} is already published on ${result.remote}`,
      );
    } catch (error) {
      failure(ctx, 'publishAdapter', error);
    }
  };
}

export function fetchAdapters(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    try {
      const client = ctx.requireClient();
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: "Idiom: fetching the team's adapters" },
        () => client.sendRequest(FetchAdaptersRequest, {}),
      );
      for (const refused of result.refused) ctx.output.warn(`refused ${refused.id}: ${refused.reason}`);
      const labels = result.fetched.map((fetched) => {
        const summary = result.adapters.find((adapter) => adapter.id === fetched.id);
        const label = summary ? labelWithAge(summary.label ?? summary.id, summary.created) : fetched.id;
        return fetched.publishedBy ? `${label} by ${fetched.publishedBy.replace(/\s*<.*>$/, '')}` : label;
      });
      const refused = result.refused.length > 0 ? ` ${result.refused.length} refused (see Idiom: Show output).` : '';
      if (labels.length === 0) {
        void vscode.window.showInformationMessage(`Idiom: no new adapters on ${result.remote}.${refused}`);
        return;
      }
      const choice = await vscode.window.showInformationMessage(
        `Idiom: fetched ${labels.join(', ')} from ${result.remote}; none is active yet.${refused}`,
        'Show adapters',
      );
      if (choice) await vscode.commands.executeCommand('idiom.showAdapters');
    } catch (error) {
      failure(ctx, 'fetchAdapters', error);
    }
  };
}
