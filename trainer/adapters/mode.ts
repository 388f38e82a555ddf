// The modes an adapter serves: inline completion, review, and the policy-checked compliance mode.
// No imports: server/protocol.ts re-exports it, so it ships in the extension's bundle.

export type Mode = 'complete' | 'review' | 'compliance';
export const MODES: readonly Mode[] = ['complete', 'review', 'compliance'];
