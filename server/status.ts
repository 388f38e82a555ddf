// The server's state as the status bar shows it; every change is pushed to the client.
import type { StatusResult } from './protocol';

export class StatusBoard {
  private status: StatusResult;

  constructor(
    initial: StatusResult,
    private readonly publish: (status: StatusResult) => void,
  ) {
    this.status = initial;
  }

  get current(): StatusResult {
    return this.status;
  }

  update(change: Partial<StatusResult>): void {
    const next = { ...this.status, ...change };
    if (JSON.stringify(next) === JSON.stringify(this.status)) return;
    this.status = next;
    this.publish(next);
  }
}
