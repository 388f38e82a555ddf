import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';
import { SuggestionEventNotification } from '../server/protocol';
import { SuggestionTracker } from './suggestion-tracker';

// Feeds the editor's events to the SuggestionTracker and its events to the server, which counts
// them per adapter in the workspace's .idiom/stats.jsonl.

type InlineResult = vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined;

export class SuggestionEvents implements vscode.Disposable {
  readonly tracker: SuggestionTracker;
  private readonly listeners: vscode.Disposable[];

  constructor(client: () => LanguageClient | undefined, log: (line: string) => void) {
    this.tracker = new SuggestionTracker((event) => {
      const running = client();
      if (!running?.isRunning()) return;
      running
        .sendNotification(SuggestionEventNotification, event)
        .catch((error: unknown) => log(`suggestion ${event.event}: ${error instanceof Error ? error.message : error}`));
    });
    this.listeners = [
      vscode.workspace.onDidChangeTextDocument((event) =>
        this.tracker.changed(
          event.document.uri.toString(),
          event.contentChanges.map((change) => ({
            offset: change.rangeOffset,
            removed: change.rangeLength,
            text: change.text,
          })),
        ),
      ),
      vscode.window.onDidChangeTextEditorSelection((event) => {
        const active = event.selections[0]?.active;
        if (active)
          this.tracker.moved(event.textEditor.document.uri.toString(), event.textEditor.document.offsetAt(active));
      }),
    ];
  }

  /** What the language client returned to VS Code for `position`: its first item is shown. */
  served(document: vscode.TextDocument, position: vscode.Position, result: InlineResult): void {
    const items = Array.isArray(result) ? result : result?.items;
    const first = items?.[0];
    const id = first?.command?.arguments?.[0];
    if (!first || typeof id !== 'string') return;
    const text = typeof first.insertText === 'string' ? first.insertText : first.insertText.value;
    this.tracker.served(document.uri.toString(), document.offsetAt(position), id, text);
  }

  dispose(): void {
    for (const listener of this.listeners) listener.dispose();
    this.tracker.dispose();
  }
}
