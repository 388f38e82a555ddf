import { strict as assert } from 'node:assert';
import type { CorpusManifest } from '../../../trainer/tools/pretrain/corpus';
import type { LanguageMetrics } from '../../../trainer/tools/pretrain/evaluate';
import { type ModelCardInput, renderModelCard } from '../../../trainer/tools/pretrain/model-card';
import { DEFAULT_HYPERPARAMETERS } from '../../../trainer/tools/pretrain/train';

function metrics(bpb: number, xz: number): LanguageMetrics {
  return {
    files: 3,
    bytes: 1000,
    tokens: 300,
    modelBitsPerByte: bpb,
    xzBitsPerByteFileByFile: xz,
    xzBitsPerByteConcatenated: xz - 0.2,
    ratioToXzFileByFile: bpb / xz,
    ratioToXzConcatenated: bpb / (xz - 0.2),
    nextLine: { lines: 10, exact: 2, exactMatch: 0.2 },
    fimLine: { lines: 10, exact: 1, exactMatch: 0.1 },
  };
}

const split = {
  typescript: { files: 1, bytes: 10 },
  javascript: { files: 2, bytes: 20 },
  python: { files: 3, bytes: 30 },
};
const manifest: CorpusManifest = {
  created: '2026-01-01T00:00:00Z',
  packages: [
    { name: 'zod', version: '4.6.7', license: 'MIT', language: 'typescript', heldOut: false, files: 5, bytes: 5000 },
    {
      name: 'python-stdlib/os',
      version: '3.11.2-6',
      license: 'PSF-2.0',
      language: 'python',
      heldOut: false,
      files: 1,
      bytes: 100,
    },
    {
      name: 'python-stdlib/json',
      version: '3.11.2-6',
      license: 'PSF-2.0',
      language: 'python',
      heldOut: true,
      files: 2,
      bytes: 200,
    },
  ],
  excluded: { test: 3 },
  split: { train: split, heldOut: split },
  sha256: { train: 'a', heldOut: 'b' },
};

const input: ModelCardInput = {
  name: 'idiom-tiny',
  configJson: {
    model_type: 'llama',
    hidden_size: 256,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    head_dim: 64,
    intermediate_size: 688,
    vocab_size: 4096,
    rope_theta: 10000,
    max_position_embeddings: 512,
  },
  parameters: 4_000_000,
  embeddingParameters: 1_000_000,
  weightsBytes: 8_000_000,
  weightsSha256: 'f'.repeat(64),
  manifest,
  vocab: {
    chosen: 4096,
    table: [4096, 8192].map((v) => ({
      vocabSize: v,
      bytesPerToken: { all: 3, typescript: 3, javascript: 3, python: 3 },
      trainBytesPerToken: 3,
      embeddingParameters: v * 256,
      flopsPerToken: 1e7,
      flopsPerByte: 3e6,
      trainSeconds: 1,
    })),
  },
  stream: { tokens: 1000, fimExamples: 10, plainDocuments: 10, fimRate: 0.5 },
  hyperparameters: { ...DEFAULT_HYPERPARAMETERS, batch: 4, seqLen: 512 },
  progress: {
    step: 100,
    tokens: 204_800,
    trainSeconds: 60,
    sittings: 2,
    history: [[100, 3.5, 1, 1e-3]],
    done: true,
    extensions: [{ step: 50, from: { seconds: 30 }, to: { seconds: 60 }, fimCuts: 'word' }],
  },
  hardware: 'test CPU',
  stageSeconds: { train: 60 },
  metrics: { typescript: metrics(1.5, 2.1), javascript: metrics(1.4, 2.2), python: metrics(1.9, 1.8) },
  samples: [
    {
      language: 'python',
      kind: 'fim',
      source: 'x/y.py',
      prompt: 'a = |b|',
      suffix: 'c',
      completion: '```x```',
      expected: 'd',
    },
  ],
};

describe('pretrain model card', () => {
  const card = renderModelCard(input);

  it('every table row has as many cells as its header', () => {
    let columns = 0;
    for (const line of card.split('\n')) {
      if (!line.startsWith('|')) {
        columns = 0;
        continue;
      }
      // Cells split on pipes outside backticks.
      const cells = line.replace(/`[^`]*`/g, 'code').split('|').length - 2;
      if (columns === 0) columns = cells;
      else assert.equal(cells, columns, `row has ${cells} cells, header ${columns}: ${line}`);
    }
  });

  it('states the numbers, the held-out split, the extension and how to reproduce', () => {
    assert.match(
      card,
      /\| TypeScript \| 3 \| 1,000 \| 300 \| \*\*1\.500\*\* \| 2\.100 \| 0\.71× \|.* \| 20\.0% \(2\/10\) \| 10\.0% \(1\/10\) \|/,
    );
    assert.match(card, /CPython stdlib `json` \| 3\.11\.2-6 \| PSF-2\.0 \| Python \| 2 \| 0\.00 \| held out \|/);
    assert.match(card, /CPython stdlib, 1 other modules/);
    assert.match(
      card,
      /npm run pretrain -- --minutes 0\.5 --fim-cuts char\nnpm run pretrain -- --extend --minutes 1 --fim-cuts word\n/,
    );
    assert.match(card, /span ends uniform over characters \|/);
    assert.match(card, /extended from 0\.5 min to 1 min .*; FIM span ends moved to word boundaries \(75% of them\) \|/);
    assert.match(card, /at step 50 the run was extended from 0\.5 min to 1 min of training/);
    assert.match(card, /tokens per parameter \| 0\.05 \|/);
    assert.ok(!card.includes('```x```'), 'code fences inside samples are broken up');
  });
});
