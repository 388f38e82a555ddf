import { type TorchAvailable, probeTorch } from '../../../trainer/training/torch-bridge/python';

/**
 * The PyTorch a test needs. Where it is missing the test is skipped, except on CI (or with
 * IDIOM_REQUIRE_TORCH), where a missing PyTorch fails the test instead of hiding it.
 */
export async function requireTorch(test: Mocha.Context): Promise<TorchAvailable> {
  const probe = await probeTorch();
  if (probe.ok) return probe;
  if (process.env.CI || process.env.IDIOM_REQUIRE_TORCH)
    throw new Error(`PyTorch is required here: ${probe.reason} (run trainer/training/torch/install-ci.sh)`);
  test.skip();
}
