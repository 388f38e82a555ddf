import { strict as assert } from 'node:assert';
import { Rng } from '../../../trainer/model/random';
import type { HostTensor } from '../../../trainer/model/tensor';

/**
 * Checks float64 gradients against central differences: for each named tensor, three random
 * elements nudged by ±h through `lossAt`; the largest error relative to the numeric gradients'
 * scale must stay under 1e-6.
 */
export async function assertGradientsMatchFiniteDifferences(
  start: Record<string, HostTensor>,
  grads: Map<string, HostTensor>,
  names: readonly string[],
  lossAt: (tensors: Record<string, HostTensor>) => Promise<number>,
): Promise<void> {
  const rng = new Rng(4);
  const h = 1e-5;
  for (const name of names) {
    const analytic: number[] = [];
    const numeric: number[] = [];
    for (let k = 0; k < 3; k++) {
      const index = rng.int(start[name].data.length);
      const data = Float64Array.from(start[name].data as Float64Array);
      const perturbed = { ...start, [name]: { ...start[name], data } };
      data[index] += h;
      const up = await lossAt(perturbed);
      data[index] -= 2 * h;
      const down = await lossAt(perturbed);
      numeric.push((up - down) / (2 * h));
      analytic.push((grads.get(name)!.data as Float64Array)[index]);
    }
    const scale = Math.max(...numeric.map(Math.abs), 1e-6);
    const error = Math.max(...analytic.map((a, i) => Math.abs(a - numeric[i]))) / scale;
    assert.ok(error < 1e-6, `${name}: analytic ${analytic} vs numeric ${numeric} (relative error ${error})`);
  }
}
