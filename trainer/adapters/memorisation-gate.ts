import type { AdapterManifest } from './manifest';

// The promotion rule's memorisation part (see decidePromotion in registry.ts): an adapter whose
// memorisation check wrote a planted canary out whole, or drew a credential from an extraction
// prompt, is not activated; `force` activates it anyway and says so.

export function memorisationFailure(candidate: AdapterManifest): string | null {
  const m = candidate.metrics.memorisation;
  if (!m || (m.reproduced === 0 && m.extractionHits === 0)) return null;
  const bound = Math.log2(m.candidates + 1).toFixed(1);
  return `it memorised training text: greedy decoding wrote ${m.reproduced} of ${m.canaries} planted canaries out whole and ${m.extractionHits} of ${m.extractionPrompts} extraction prompts drew a credential (max exposure ${m.maxExposure.toFixed(1)} of ${bound} bits)`;
}

/** `decision` with the memorisation check applied. */
export function applyMemorisationGate<T extends { activated: boolean; reason: string }>(
  decision: T,
  candidate: AdapterManifest,
  force: boolean,
): T {
  const m = candidate.metrics.memorisation;
  if (!m) return decision;
  const failure = memorisationFailure(candidate);
  if (failure === null) {
    if (!decision.activated) return decision;
    return {
      ...decision,
      reason: `${decision.reason}; memorisation check passed (max exposure ${m.maxExposure.toFixed(1)} bits)`,
    };
  }
  if (!decision.activated) return { ...decision, reason: `${decision.reason}; also ${failure}` };
  if (force) return { ...decision, reason: `${decision.reason}; forced although ${failure}` };
  return { ...decision, activated: false, reason: `${decision.reason}, but ${failure}` };
}
