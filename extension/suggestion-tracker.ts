// What happened to the suggestion on screen, told from the editor's events: VS Code's stable API
// says when a suggestion is accepted (the item's command) but not when it is shown, partly
// accepted or dismissed (handleDidShowCompletionItem and handleDidPartiallyAcceptCompletionItem
// are proposed API). So: a suggestion returned to VS Code counts as shown; an edit at its
// position that inserts a prefix of it of 2+ characters at once is a partial accept (Ctrl+Right);
// one character that matches is typing through it; any other edit, or the cursor leaving, is a
// dismissal. No 'vscode' import, so tests drive it directly.

import type { SuggestionEventParams } from '../server/protocol';

interface Pending {
  id: string;
  uri: string;
  /** Where the rest of the suggestion would be inserted. */
  offset: number;
  /** What is not yet in the document. */
  rest: string;
}

/** A document change as offsets: `removed` characters at `offset` replaced by `text`. */
export interface Change {
  offset: number;
  removed: number;
  text: string;
}

/** A dismissal waits this long: VS Code runs the accept command just after the accept edit. */
const DISMISS_DELAY_MS = 1000;

export class SuggestionTracker {
  private pending: Pending | null = null;
  private readonly dismissals = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(
    private readonly send: (event: SuggestionEventParams) => void,
    private readonly delayMs = DISMISS_DELAY_MS,
  ) {}

  /** The first item of an answer VS Code got at `offset` (VS Code shows the first). */
  served(uri: string, offset: number, id: string, text: string): void {
    const pending = this.pending;
    if (pending?.id === id) return;
    // The same text again where the one on screen continues: still the same suggestion to the user.
    if (pending && pending.uri === uri && pending.offset === offset && pending.rest === text) return;
    if (pending) this.dismiss(pending);
    this.pending = { id, uri, offset, rest: text };
    this.send({ id, event: 'shown' });
  }

  /** The item's command ran: the server counts the accept; nothing is dismissed. */
  accepted(id: string): void {
    const timer = this.dismissals.get(id);
    if (timer) clearTimeout(timer);
    this.dismissals.delete(id);
    if (this.pending?.id === id) this.pending = null;
  }

  changed(uri: string, changes: readonly Change[]): void {
    const pending = this.pending;
    if (!pending || pending.uri !== uri) return;
    const change = changes.length === 1 ? changes[0] : null;
    if (change?.removed !== 0 || change.offset !== pending.offset || change.text === '') {
      this.dismiss(pending);
      return;
    }
    if (change.text === pending.rest) {
      // The whole rest: the accept command follows.
      this.pending = null;
      return;
    }
    if (!pending.rest.startsWith(change.text)) {
      this.dismiss(pending);
      return;
    }
    if (change.text.length >= 2) this.send({ id: pending.id, event: 'partial', chars: change.text.length });
    pending.rest = pending.rest.slice(change.text.length);
    pending.offset += change.text.length;
  }

  /** The cursor is at `offset` of `uri` (the active editor's selection changed). */
  moved(uri: string, offset: number): void {
    const pending = this.pending;
    if (pending && (pending.uri !== uri || pending.offset !== offset)) this.dismiss(pending);
  }

  private dismiss(pending: Pending): void {
    if (this.pending === pending) this.pending = null;
    const timer = setTimeout(() => {
      this.dismissals.delete(pending.id);
      this.send({ id: pending.id, event: 'dismissed' });
    }, this.delayMs);
    this.dismissals.set(pending.id, timer);
  }

  dispose(): void {
    for (const timer of this.dismissals.values()) clearTimeout(timer);
    this.dismissals.clear();
    this.pending = null;
  }
}
