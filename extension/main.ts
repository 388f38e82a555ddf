// The VS Code extension: starts the Idiom language server and gives it commands, settings and a
// status bar item. The only code that imports 'vscode'.
import * as vscode from 'vscode';
import { commandFactories } from './commands';
import { Ctx } from './ctx';

let ctx: Ctx | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  ctx = new Ctx(context);
  for (const [name, factory] of Object.entries(commandFactories)) {
    ctx.pushDisposable(vscode.commands.registerCommand(name, factory(ctx)));
  }
  try {
    await ctx.start();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    ctx.output.error(`cannot start the language server: ${message}`);
    void vscode.window.showErrorMessage(`Idiom: cannot start the language server: ${message}`);
  }
}

export async function deactivate(): Promise<void> {
  await ctx?.dispose();
  ctx = undefined;
}
