import type { AdapterManifest, HeldOutMetrics } from '../../adapters/manifest';
import type { Registry } from '../../adapters/registry';

// The rows `idiom train` compares: the base, the new adapter, the adapter that was active (scored
// on the same split), and the newest adapter of the other method (LoRA vs full) on the same base,
// from its manifest. Sizes, seconds and peak memory come from the manifests.

export interface ComparisonRow {
  name: string;
  method: 'base' | 'lora' | 'full';
  id: string | null;
  metrics: HeldOutMetrics | null;
  /** 'this split': evaluated on this run's held-out split; 'own split': from the adapter's own manifest. */
  source: 'this split' | 'own split';
  trainableParameters: number | null;
  fileBytes: number | null;
  seconds: number | null;
  peakRssBytes: number | null;
  steps: number | null;
  tokens: number | null;
}

export function manifestRow(
  name: string,
  manifest: AdapterManifest,
  metrics: HeldOutMetrics | null,
  source: ComparisonRow['source'],
): ComparisonRow {
  const numberOrNull = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  return {
    name,
    method: manifest.training.method,
    id: manifest.id,
    metrics,
    source,
    trainableParameters: numberOrNull(manifest.training.hyperparameters.trainableParameters),
    fileBytes: manifest.weights.bytes,
    seconds: manifest.training.seconds,
    peakRssBytes: numberOrNull(manifest.training.hyperparameters.peakRssBytes),
    steps: manifest.training.steps,
    tokens: manifest.training.tokens,
  };
}

export async function comparisonRows(registry: Registry, current: AdapterManifest): Promise<ComparisonRow[]> {
  const rows: ComparisonRow[] = [
    {
      name: 'base',
      method: 'base',
      id: null,
      metrics: current.metrics.base,
      source: 'this split',
      trainableParameters: null,
      fileBytes: null,
      seconds: null,
      peakRssBytes: null,
      steps: null,
      tokens: null,
    },
    manifestRow(
      current.training.method === 'lora' ? 'LoRA (this run)' : 'full (this run)',
      current,
      current.metrics.adapter,
      'this split',
    ),
  ];
  for (const [id, metrics] of Object.entries(current.metrics.others ?? {})) {
    try {
      rows.push(manifestRow(`previously active ${id}`, await registry.manifest(id), metrics, 'this split'));
    } catch {
      // removed meanwhile: nothing to show
    }
  }
  const otherMethod = current.training.method === 'lora' ? 'full' : 'lora';
  const shown = new Set(rows.map((r) => r.id));
  for (const id of (await registry.ids()).reverse()) {
    if (shown.has(id)) continue;
    let manifest: AdapterManifest;
    try {
      manifest = await registry.manifest(id);
    } catch {
      continue;
    }
    if (manifest.training.method !== otherMethod || manifest.base.sha256 !== current.base.sha256) continue;
    const sameSplit =
      manifest.dataset.heldOut?.sha256 !== undefined &&
      manifest.dataset.heldOut.sha256 === current.dataset.heldOut?.sha256;
    rows.push(
      manifestRow(
        `${otherMethod === 'lora' ? 'LoRA' : 'full'} ${id}`,
        manifest,
        manifest.metrics.adapter,
        sameSplit ? 'this split' : 'own split',
      ),
    );
    break;
  }
  return rows;
}
