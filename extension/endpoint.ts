import * as vscode from 'vscode';
import { SetEndpointKeyNotification } from '../server/protocol';
import { ENDPOINT_KEY_SECRET, type Ctx } from './ctx';

// The completion endpoint's API key lives in VS Code's secret storage, never in settings: this
// command stores it and hands it to the server (which keeps it in memory); Ctx sends it again
// whenever the server starts.

/** Idiom: Set endpoint API key: asks for it (empty forgets it) and stores it as a secret. */
export function setEndpointKey(ctx: Ctx): (...args: unknown[]) => unknown {
  return async () => {
    const key = await vscode.window.showInputBox({
      title: 'Idiom: API key of the completion endpoint (idiom.endpoint.url)',
      prompt: 'Kept in VS Code secret storage and sent only to the endpoint. Leave empty to forget the key.',
      password: true,
      ignoreFocusOut: true,
    });
    if (key === undefined) return;
    if (key === '') await ctx.extensionContext.secrets.delete(ENDPOINT_KEY_SECRET);
    else await ctx.extensionContext.secrets.store(ENDPOINT_KEY_SECRET, key);
    const client = ctx.client;
    if (client?.isRunning())
      await client.sendNotification(SetEndpointKeyNotification, { key: key === '' ? null : key });
    void vscode.window.showInformationMessage(
      key === '' ? 'Idiom: endpoint API key forgotten' : 'Idiom: endpoint API key stored',
    );
  };
}
