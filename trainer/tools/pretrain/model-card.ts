// MODEL_CARD.md for the embedded default model, written from the run's recorded numbers.

import type { CorpusManifest, PackageSummary } from './corpus';
import { type LanguageMetrics, MAX_EVAL_FILE_CHARS } from './evaluate';
import { type CorpusLanguage, CORPUS_LANGUAGES } from './sources';
import type { PretrainHyperparameters, RunLength, TrainProgress } from './train';
import { type FimCuts, WORD_CUT_KEEP } from './data';
import type { VocabMeasurement } from './vocab';

export interface ModelCardInput {
  name: string;
  configJson: Record<string, unknown>;
  parameters: number;
  embeddingParameters: number;
  weightsBytes: number;
  weightsSha256: string;
  manifest: CorpusManifest;
  vocab: { chosen: number; table: VocabMeasurement[] };
  stream: { tokens: number; fimExamples: number; plainDocuments: number; fimRate: number };
  hyperparameters: PretrainHyperparameters;
  progress: TrainProgress;
  hardware: string;
  stageSeconds: Record<string, number>;
  metrics: Record<CorpusLanguage, LanguageMetrics>;
  samples: {
    language: CorpusLanguage;
    kind: string;
    source: string;
    prompt: string;
    suffix?: string;
    completion: string;
    expected: string;
  }[];
}

const LANGUAGE_NAMES: Record<CorpusLanguage, string> = {
  typescript: 'TypeScript',
  javascript: 'JavaScript',
  python: 'Python',
};

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(2);
}

function fence(text: string): string {
  return `\`\`\`\n${text.replace(/```/g, '`\u200b``')}\n\`\`\``;
}

/** npm packages one row each; the Python standard library's training modules folded into one row. */
function sourceRows(packages: PackageSummary[]): string[] {
  const rows: string[] = [];
  const stdlibTrain = packages.filter((p) => p.name.startsWith('python-stdlib/') && !p.heldOut && p.files > 0);
  for (const p of packages) {
    if (p.name.startsWith('python-stdlib/') && !p.heldOut) continue;
    const name = p.name.startsWith('python-stdlib/')
      ? `CPython stdlib \`${p.name.slice('python-stdlib/'.length)}\``
      : `\`${p.name}\``;
    rows.push(
      `| ${name} | ${p.version} | ${p.license} | ${LANGUAGE_NAMES[p.language]} | ${p.files} | ${mb(p.bytes)} | ${p.heldOut ? 'held out' : 'train'} |`,
    );
  }
  if (stdlibTrain.length > 0) {
    const files = stdlibTrain.reduce((n, p) => n + p.files, 0);
    const bytes = stdlibTrain.reduce((n, p) => n + p.bytes, 0);
    rows.push(
      `| CPython stdlib, ${stdlibTrain.length} other modules | ${stdlibTrain[0].version} (Debian) | ${stdlibTrain[0].license} | Python | ${files} | ${mb(bytes)} | train |`,
    );
  }
  return rows;
}

export function renderModelCard(c: ModelCardInput): string {
  const cfg = c.configJson;
  const h = c.hyperparameters;
  const p = c.progress;
  const split = c.manifest.split;
  const trainBytes = CORPUS_LANGUAGES.reduce((n, l) => n + split.train[l].bytes, 0);
  const lines: string[] = [];
  lines.push(`# ${c.name}`);
  lines.push('');
  lines.push(
    `Idiom's embedded default base model: a ${(c.parameters / 1e6).toFixed(2)}M-parameter Llama-style code model for TypeScript, JavaScript and Python, ` +
      `pretrained from scratch on CPU with Idiom's own trainer (ONNX Runtime, our autodiff, \`full\` method) on permissively licensed code. ` +
      `It exists so that a fresh install completes code and trains adapters offline; point Idiom at a stronger Hugging Face checkpoint ` +
      `(Qwen2.5-Coder, SmolLM, …) for better completions. Reproduce with \`npm run pretrain\` (recipe: \`trainer/tools/pretrain/\`).`,
  );
  lines.push('');
  lines.push('## Model');
  lines.push('');
  lines.push('| | |');
  lines.push('| --- | --- |');
  lines.push(`| architecture | ${cfg.model_type} (RMSNorm, RoPE θ ${cfg.rope_theta}, SwiGLU, tied embeddings) |`);
  lines.push(
    `| hidden size / layers / heads / head dim | ${cfg.hidden_size} / ${cfg.num_hidden_layers} / ${cfg.num_attention_heads} (kv ${cfg.num_key_value_heads}) / ${cfg.head_dim} |`,
  );
  lines.push(`| SwiGLU intermediate size | ${cfg.intermediate_size} |`);
  lines.push(`| vocabulary | ${cfg.vocab_size} (byte-level BPE, ours) |`);
  lines.push(
    `| context | ${cfg.max_position_embeddings} tokens (the training length; longer contexts are untrained) |`,
  );
  lines.push(
    `| parameters | ${c.parameters.toLocaleString('en-US')} (embedding ${c.embeddingParameters.toLocaleString('en-US')}) |`,
  );
  lines.push(`| weights | model.safetensors, float16, ${mb(c.weightsBytes)} MB, sha256 \`${c.weightsSha256}\` |`);
  lines.push('');
  lines.push(
    'Special tokens: `<|endoftext|>` (end of document, eos), `<|fim_prefix|>`, `<|fim_middle|>`, `<|fim_suffix|>`, `<|file_sep|>`.',
  );
  lines.push(
    'Fill in the middle uses PSM order: `<|fim_prefix|>` prefix `<|fim_suffix|>` suffix `<|fim_middle|>` → middle, ended by `<|endoftext|>`.',
  );
  lines.push('');
  lines.push('## Held-out results');
  lines.push('');
  lines.push(
    'Held-out packages are never trained on (split by whole package; held-out files that near-duplicate training files were dropped). ' +
      `Files longer than ${MAX_EVAL_FILE_CHARS.toLocaleString('en-US')} characters are cut to their first ${MAX_EVAL_FILE_CHARS.toLocaleString('en-US')} (at a line end) so that one big file cannot dominate a language. ` +
      'Bits per byte: each file scored on its own in windows of ' +
      `${h.seqLen} tokens with stride ${h.seqLen / 2}; \`xz -9 --format=raw\` on the same bytes, file by file (the same information the model sees) ` +
      'and with all files of the language concatenated (cross-file repetition helps xz: a stricter floor). Next-line exact match: the file up to a line ' +
      'start as the prompt (last ' +
      `${h.seqLen - 48} tokens), greedy decoding to the first newline, equal to the real line (trailing whitespace ignored). ` +
      'FIM line exact match: the same lines filled in the middle, as the server asks at the first character of a line: PSM with the prefix up to the ' +
      "line's code (after its indentation), the suffix from the line's end (a quarter of the prompt at most), greedy to the first newline.",
  );
  lines.push('');
  lines.push(
    '| language | files | bytes | tokens | model bits/byte | xz -9 file by file | model / xz | xz -9 concatenated | model / xz concat. | next-line exact match | FIM line exact match |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const l of CORPUS_LANGUAGES) {
    const m = c.metrics[l];
    lines.push(
      `| ${LANGUAGE_NAMES[l]} | ${m.files} | ${m.bytes.toLocaleString('en-US')} | ${m.tokens.toLocaleString('en-US')} | **${m.modelBitsPerByte.toFixed(3)}** | ${m.xzBitsPerByteFileByFile.toFixed(3)} | ` +
        `${m.ratioToXzFileByFile.toFixed(2)}× | ${m.xzBitsPerByteConcatenated.toFixed(3)} | ${m.ratioToXzConcatenated.toFixed(2)}× | ${(100 * m.nextLine.exactMatch).toFixed(1)}% (${m.nextLine.exact}/${m.nextLine.lines}) | ` +
        `${m.fimLine ? `${(100 * m.fimLine.exactMatch).toFixed(1)}% (${m.fimLine.exact}/${m.fimLine.lines})` : 'not measured'} |`,
    );
  }
  lines.push('');
  lines.push('## Training');
  lines.push('');
  const trainTokens = p.tokens;
  lines.push('| | |');
  lines.push('| --- | --- |');
  lines.push(
    `| corpus | ${mb(trainBytes)} MB of training source → ${c.stream.tokens.toLocaleString('en-US')} tokens (${c.stream.fimExamples.toLocaleString('en-US')} FIM examples, ${c.stream.plainDocuments.toLocaleString('en-US')} plain documents) |`,
  );
  const spans = (cuts: FimCuts | undefined): string =>
    cuts === 'word'
      ? `span ends moved to word boundaries (${100 - 100 * WORD_CUT_KEEP}% of them)`
      : 'span ends uniform over characters';
  lines.push(
    `| objective | next-token loss on every token (FIM and plain alike), FIM rate ${c.stream.fimRate} per ≤700-character segment, ${spans(p.fimCuts)} |`,
  );
  lines.push(
    `| steps × batch × length | ${p.step} × ${h.batch} × ${h.seqLen} = ${trainTokens.toLocaleString('en-US')} tokens (${(trainTokens / c.stream.tokens).toFixed(2)} epochs) |`,
  );
  lines.push(`| tokens per parameter | ${(trainTokens / c.parameters).toFixed(2)} |`);
  lines.push(
    `| optimizer | AdamW β (${h.beta1}, ${h.beta2}), weight decay ${h.weightDecay}, clip ${h.maxGradNorm}, peak lr ${h.peakLearningRate}, ${h.warmupSteps} warm-up steps, linear decay to ${h.finalLearningRateFraction}× over the last ${100 * h.decayFraction}% |`,
  );
  for (const e of p.extensions ?? []) {
    const unit = (l: RunLength): string =>
      'steps' in l ? `${l.steps} steps` : `${Number((l.seconds / 60).toFixed(1))} min`;
    lines.push(
      `| extension | at step ${e.step} the run was extended from ${unit(e.from)} to ${unit(e.to)} of training: the learning rate warmed up again from ${h.finalLearningRateFraction}× to the peak over ${h.warmupSteps} steps, then decayed over the last ${100 * h.decayFraction}% of the new length; FIM ${spans(e.fimCuts)} |`,
    );
  }
  lines.push(`| init | N(0, 0.02), o_proj/down_proj scaled by 1/√(2·layers), seed ${h.seed} |`);
  lines.push(`| hardware | ${c.hardware}, ${h.threads} ONNX Runtime threads (shared with other jobs) |`);
  lines.push(
    `| training time | ${(p.trainSeconds / 60).toFixed(1)} min in ${p.sittings} sitting(s), ${(trainTokens / p.trainSeconds).toFixed(0)} tokens/s |`,
  );
  const last = p.history[p.history.length - 1];
  if (last) lines.push(`| final training loss | ${last[1]} nats/token (mean of the last logged steps) |`);
  lines.push(
    `| pipeline time (this run) | ${Object.entries(c.stageSeconds)
      .map(([k, v]) => `${k} ${v < 120 ? `${v.toFixed(0)} s` : `${(v / 60).toFixed(1)} min`}`)
      .join(', ')} |`,
  );
  lines.push('');
  lines.push('### Reproduce');
  lines.push('');
  const lengthFlag = (l: RunLength): string => ('steps' in l ? `--steps ${l.steps}` : `--minutes ${l.seconds / 60}`);
  const extensions = p.extensions ?? [];
  const firstLength = extensions.length > 0 ? extensions[0].from : undefined;
  const cutsFlag = (cuts: FimCuts | undefined): string => ` --fim-cuts ${cuts ?? 'char'}`;
  const commands = firstLength
    ? [
        `npm run pretrain -- ${lengthFlag(firstLength)}${cutsFlag(p.fimCuts)}`,
        ...extensions.map((e) => `npm run pretrain -- --extend ${lengthFlag(e.to)}${cutsFlag(e.fimCuts)}`),
      ]
    : [`npm run pretrain --${cutsFlag(p.fimCuts)}`];
  lines.push(fence(commands.join('\n')));
  lines.push(
    'Every stage caches its output under `.cache/pretrain/` and training resumes from its last checkpoint, so an interrupted command can simply be run again. ' +
      'A time-budgeted run takes as many steps as the machine manages in that time: on a faster or idle machine it sees more tokens (pass `--steps` for a fixed count). ' +
      'Wall time ≈ fetch + corpus (about a minute) + tokenizer measurement (under 30 s) + token stream (about 10 s) + the training minutes + evaluation (a few minutes).',
  );
  lines.push('');
  lines.push('### Tokenizer: vocabulary size by measurement');
  lines.push('');
  lines.push(
    'Byte-level BPE trained with our trainer on the training split for each candidate size; bytes per token measured on the held-out split. ' +
      'Cost = matrix-product training FLOPs per token of this model body (lm_head = V·d) divided by held-out bytes per token. ' +
      `The size with the lowest cost per byte was chosen: **${c.vocab.chosen}**.`,
  );
  lines.push('');
  lines.push(
    '| vocabulary | held-out bytes/token (all) | TS | JS | Python | embedding params | training MFLOP/token | MFLOP/byte |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of c.vocab.table) {
    lines.push(
      `| ${r.vocabSize}${r.vocabSize === c.vocab.chosen ? ' (chosen)' : ''} | ${r.bytesPerToken.all.toFixed(3)} | ${r.bytesPerToken.typescript.toFixed(2)} | ${r.bytesPerToken.javascript.toFixed(2)} | ${r.bytesPerToken.python.toFixed(2)} | ` +
        `${r.embeddingParameters.toLocaleString('en-US')} | ${(r.flopsPerToken / 1e6).toFixed(1)} | ${(r.flopsPerByte / 1e6).toFixed(2)} |`,
    );
  }
  lines.push('');
  lines.push('## Corpus');
  lines.push('');
  lines.push(
    "npm packages fetched with `npm pack name@version` (npm verifies the tarball against the registry's integrity; the recipe pins it) and accepted only if " +
      'the package.json `license` is MIT, Apache-2.0, BSD-2/3-Clause or ISC; Python also from the CPython standard library as Debian 12 ships it ' +
      '(PSF-2.0). Per package, only the listed source folders; type declarations, tests, minified or generated files, files under 200 B or over 256 KB dropped; ' +
      'exact and near duplicates (MinHash, Jaccard ≥ 0.85) removed. Nothing from the corpus is committed; this list is the recipe (`trainer/tools/pretrain/sources.json`).',
  );
  lines.push('');
  lines.push('| split | TypeScript | JavaScript | Python |');
  lines.push('| --- | --- | --- | --- |');
  for (const key of ['train', 'heldOut'] as const) {
    lines.push(
      `| ${key === 'train' ? 'train' : 'held out'} | ${CORPUS_LANGUAGES.map((l) => `${split[key][l].files} files, ${mb(split[key][l].bytes)} MB`).join(' | ')} |`,
    );
  }
  lines.push('');
  lines.push(
    `Excluded files: ${Object.entries(c.manifest.excluded)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
  );
  lines.push('');
  lines.push('| source | version | license | language | files | MB | split |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- |');
  lines.push(...sourceRows(c.manifest.packages));
  lines.push('');
  lines.push('## Sample completions (held-out code, greedy)');
  lines.push('');
  for (const s of c.samples) {
    lines.push(
      `### ${LANGUAGE_NAMES[s.language]}, ${s.kind === 'fim' ? 'fill in the middle' : 'next lines'} — \`${s.source}\``,
    );
    lines.push('');
    lines.push(s.kind === 'fim' ? 'Prefix (end):' : 'Prompt (end):');
    lines.push(fence(s.prompt));
    if (s.suffix !== undefined) {
      lines.push('Suffix (start):');
      lines.push(fence(s.suffix));
    }
    lines.push('Model:');
    lines.push(fence(s.completion));
    lines.push('Real code:');
    lines.push(fence(s.expected));
    lines.push('');
  }
  lines.push('## Limits');
  lines.push('');
  lines.push(
    `- Tiny and briefly trained (${(trainTokens / 1e6).toFixed(1)}M tokens on 2 shared CPU cores): it learns syntax, common idioms and local repetition, ` +
      'not APIs or semantics. It is a starting point for repository adapters, not a general assistant.',
  );
  lines.push(`- Context is ${cfg.max_position_embeddings} tokens; prompts must be cut to fit.`);
  lines.push(
    '- Filling in the middle is much weaker than continuing left to right (compare the two exact-match columns): in PSM order the end of the prefix sits ' +
      'behind the whole suffix, and a model this small hardly uses it. Repository adapters train on FIM examples cut at syntax boundaries.',
  );
  lines.push(
    '- Trained on library source code of a few dozen packages; application code, other languages and prose are out of distribution.',
  );
  lines.push('');
  return lines.join('\n');
}
