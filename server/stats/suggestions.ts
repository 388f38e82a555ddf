// The suggestions this server served, by the id their inline completion item carries, so that
// the client's shown / accepted / partial / dismissed events can be counted for the adapter that
// served each one (.idiom/stats.jsonl, trainer/adapters/stats.ts). Counting never delays or stops
// serving: a failed write costs one log line.

import { randomBytes } from 'node:crypto';
import { appendStatsEvent, type SuggestionEvent } from '../../trainer/adapters/stats';
import type { Mode } from '../protocol';

/** Served suggestions remembered; older ids are forgotten (their events are then ignored). */
const REMEMBERED = 2000;

interface Served {
  adapter: string | null;
  mode: Mode;
  /** Characters not yet accepted (a partial accept takes some). */
  remaining: number;
  shown: boolean;
  /** Accepted or dismissed: later events of the same suggestion are not counted again. */
  closed: boolean;
}

export class SuggestionStats {
  private readonly served = new Map<string, Served>();

  /**
   * `registryDir`: where stats.jsonl goes now, or null where nothing may be written (an untrusted
   * workspace, no registry yet).
   */
  constructor(
    private readonly registryDir: () => string | null,
    private readonly log: { info(line: string): void; error(line: string): void },
  ) {}

  /** A fresh id for a suggestion that carries none yet. */
  static newId(): string {
    return randomBytes(8).toString('hex');
  }

  remember(id: string, adapter: string | null, mode: Mode, text: string): void {
    this.served.set(id, { adapter, mode, remaining: text.length, shown: false, closed: false });
    while (this.served.size > REMEMBERED) this.served.delete(this.served.keys().next().value as string);
  }

  /** The mode a remembered suggestion was served in, or null for an unknown id. */
  modeOf(id: string): Mode | null {
    return this.served.get(id)?.mode ?? null;
  }

  /** Counts an event of a served suggestion; false when the id is unknown (not served here, or forgotten). */
  record(id: string, event: SuggestionEvent, partialChars = 0): boolean {
    const served = this.served.get(id);
    if (!served) return false;
    if (served.closed) return true;
    let chars = 0;
    if (event === 'shown') {
      if (served.shown) return true;
      served.shown = true;
    } else if (event === 'partial') {
      chars = Math.max(0, Math.min(served.remaining, Math.floor(partialChars)));
      if (chars === 0) return true;
      served.remaining -= chars;
    } else {
      if (event === 'accepted') chars = served.remaining;
      served.closed = true;
    }
    const dir = this.registryDir();
    if (dir === null) return true;
    try {
      appendStatsEvent(dir, { at: new Date().toISOString(), event, adapter: served.adapter, mode: served.mode, chars });
    } catch (error) {
      this.log.error(
        `cannot count the suggestion's ${event}: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    return true;
  }
}
