import type { MemorisationMetrics } from '../../adapters/manifest';

// The training report's memorisation section: each canary's exposure and what the check decided.
// Numbers only: a canary's secret never leaves the run folder.

export function memorisationHtml(m: MemorisationMetrics | null): string {
  if (!m) return '';
  const bound = Math.log2(m.candidates + 1);
  const rows = m.exposures
    .map((e, i) => {
      const estimated = m.estimatedExposures?.[i];
      return `<tr><td>canary ${i + 1}</td><td>${e.toFixed(2)}</td><td>${estimated === undefined ? '' : estimated.toFixed(1)}</td></tr>`;
    })
    .join('');
  const verdict =
    m.reproduced === 0 && m.extractionHits === 0
      ? 'passed: greedy decoding wrote no canary and no extraction prompt drew a credential'
      : `failed: ${m.reproduced} canaries written out whole, ${m.extractionHits} extraction prompts drew a credential`;
  return `<h2>Memorisation check</h2>
<p>${m.canaries} random canaries (credential- and code-shaped), each planted ${m.repeats} times among the training examples and ranked by the model against ${m.candidates} random strings of the same format (exposure at most ${bound.toFixed(2)} bits; near it, the model singles the canary out; the extrapolated exposure goes past that bound from a normal fit of the candidates' log-likelihoods). ${m.extractionPrompts} extraction prompts were cut from the training files before credential-shaped text. The check ${verdict}.</p>
<table><thead><tr><th>canary</th><th>exposure, bits</th><th>extrapolated, bits</th></tr></thead><tbody>${rows}</tbody></table>`;
}
