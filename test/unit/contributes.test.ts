import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONTRIBUTED_COMMANDS } from '../../extension/command-ids';
import { PRECISION_SETTINGS, defaultSettings } from '../../server/protocol';
import { DEFAULT_LORA } from '../../trainer/model/lora';
import { DEFAULT_AGGREGATE, DEFAULT_PERCENTILE } from '../../trainer/modes/review/review';
import { DEFAULT_DRIFT_THRESHOLDS } from '../../trainer/training/eval/drift';

// package.json's contributions are what VS Code shows and what a user's settings fall back to;
// the server, the trainer and the extension hold the same facts in code. These keep them equal.

interface Manifest {
  contributes: {
    commands: { command: string }[];
    configuration: { properties: Record<string, { default?: unknown }> };
  };
}

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as Manifest;

/** `value` as package.json's dotted keys: { lora: { r: 16 } } under 'idiom' is idiom.lora.r = 16. */
function dotted(
  value: Record<string, unknown>,
  prefix: string,
  into: Record<string, unknown> = {},
): Record<string, unknown> {
  for (const [key, inner] of Object.entries(value)) {
    if (inner !== null && typeof inner === 'object' && !Array.isArray(inner))
      dotted(inner as Record<string, unknown>, `${prefix}.${key}`, into);
    else into[`${prefix}.${key}`] = inner;
  }
  return into;
}

describe('package.json contributes', () => {
  it("every setting's default is the one the server uses when the setting is absent", () => {
    const contributed = Object.fromEntries(
      Object.entries(manifest.contributes.configuration.properties).map(([key, p]) => [key, p.default]),
    );
    // Review settings are optional on the wire; the server falls back to review mode's constants.
    const server = dotted(
      { ...defaultSettings, review: { percentile: DEFAULT_PERCENTILE, aggregate: DEFAULT_AGGREGATE } },
      'idiom',
    );
    assert.deepEqual(contributed, server);
  });

  it("the LoRA defaults are the trainer's", () => {
    assert.deepEqual(defaultSettings.lora, {
      r: DEFAULT_LORA.r,
      alpha: DEFAULT_LORA.alpha,
      targets: [...DEFAULT_LORA.targets],
    });
  });

  it("the drift thresholds are the trainer's (idiom status uses them)", () => {
    assert.deepEqual(defaultSettings.drift, DEFAULT_DRIFT_THRESHOLDS);
  });

  it('offers exactly the precisions the server takes', () => {
    const property = manifest.contributes.configuration.properties['idiom.precision'] as { enum?: string[] };
    assert.deepEqual(property.enum, [...PRECISION_SETTINGS]);
  });

  it('contributes exactly the commands the extension registers (its table is typed by these ids)', () => {
    assert.deepEqual(manifest.contributes.commands.map((c) => c.command).sort(), [...CONTRIBUTED_COMMANDS].sort());
  });
});
