// `npm run pretrain`: fetch → corpus → tokenizer → token stream → train → export → evaluate →
// models/ (config.json, tokenizer.json, model.safetensors, MODEL_CARD.md). Every stage caches its
// output under the cache folder and is skipped when that output exists, so an interrupted run
// picks up where it stopped (training itself resumes from its last checkpoint). --extend lets a
// finished run continue to a longer --minutes/--steps (a warm restart of the learning rate).
//
//   npm run pretrain -- [--minutes 40] [--steps N] [--sitting-minutes M] [--cache .cache/pretrain]
//                       [--out models] [--fresh] [--extend] [--fim-cuts word|char] [--stages corpus,tokenizer,stream,train,export,eval,card]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadCheckpoint, saveCheckpoint } from '../../model/checkpoint';
import { type ModelConfig, countParameters, parseModelConfig, toHfConfigJson } from '../../model/config';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { CORPUS_FILES, buildCorpus, readCorpusFiles, readCorpusManifest } from './corpus';
import { type FimCuts, type PackStats, encodeTrainingStream } from './data';
import { evaluateModel, sampleCompletions } from './evaluate';
import { renderModelCard } from './model-card';
import { loadSourceList } from './sources';
import {
  DEFAULT_HYPERPARAMETERS,
  type PretrainHyperparameters,
  type RunLength,
  type TrainProgress,
  loadRunWeights,
  trainRun,
} from './train';
import { type BodyShape, type VocabMeasurement, chooseVocabSize } from './vocab';
import { sha256OfFileSync } from '../../util/sha256';

export const MODEL_NAME = 'idiom-tiny';
export const FIM_RATE = 0.5;

/** The model body, sized from measured CPU throughput (see MODEL_CARD.md); the vocabulary comes from the tokenizer stage. */
export const BODY = { hiddenSize: 256, numLayers: 4, numHeads: 4, intermediateSize: 688, contextLength: 512 };

export function modelConfig(vocabSize: number, eosTokenId: number): ModelConfig {
  return parseModelConfig({
    model_type: 'llama',
    hidden_size: BODY.hiddenSize,
    num_hidden_layers: BODY.numLayers,
    num_attention_heads: BODY.numHeads,
    num_key_value_heads: BODY.numHeads,
    intermediate_size: BODY.intermediateSize,
    vocab_size: vocabSize,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: BODY.contextLength,
    tie_word_embeddings: true,
    bos_token_id: eosTokenId,
    eos_token_id: eosTokenId,
  });
}

interface Args {
  minutes: number;
  steps?: number;
  sittingMinutes?: number;
  cache: string;
  out: string;
  fresh: boolean;
  extend: boolean;
  stages: Set<string>;
  evalBytes: number;
  evalLines: number;
  fimCuts: FimCuts;
}

const ALL_STAGES = ['corpus', 'tokenizer', 'stream', 'train', 'export', 'eval', 'card'];

function parseArgs(argv: string[]): Args {
  const args: Args = {
    minutes: 40,
    cache: '.cache/pretrain',
    out: 'models',
    fresh: false,
    extend: false,
    stages: new Set(ALL_STAGES),
    evalBytes: 120_000,
    evalLines: 150,
    fimCuts: 'word',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const positive = (): number => {
      const v = Number(value());
      if (!(v > 0) || !Number.isFinite(v)) throw new Error(`${flag} must be a positive number`);
      return v;
    };
    switch (flag) {
      case '--minutes':
        args.minutes = positive();
        break;
      case '--steps':
        args.steps = Math.round(positive());
        break;
      case '--sitting-minutes':
        args.sittingMinutes = positive();
        break;
      case '--cache':
        args.cache = value();
        break;
      case '--out':
        args.out = value();
        break;
      case '--fresh':
        args.fresh = true;
        break;
      case '--extend':
        args.extend = true;
        break;
      case '--eval-bytes':
        args.evalBytes = Math.round(positive());
        break;
      case '--eval-lines':
        args.evalLines = Math.round(positive());
        break;
      case '--fim-cuts': {
        const cuts = value();
        if (cuts !== 'char' && cuts !== 'word') throw new Error(`--fim-cuts must be char or word, got "${cuts}"`);
        args.fimCuts = cuts;
        break;
      }
      case '--stages': {
        const stages = value().split(',');
        for (const s of stages)
          if (!ALL_STAGES.includes(s)) throw new Error(`unknown stage "${s}" (stages: ${ALL_STAGES.join(', ')})`);
        args.stages = new Set(stages);
        break;
      }
      default:
        throw new Error(`unknown option "${flag}"`);
    }
  }
  return args;
}

const log = (line: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
};

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

function hardware(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.versions.node}, onnxruntime-node CPU`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cache = path.resolve(args.cache);
  const corpusDir = path.join(cache, 'corpus');
  const tokenizerDir = path.join(cache, 'tokenizer');
  const runDir = path.join(cache, 'run');
  const out = path.resolve(args.out);
  const timesFile = path.join(cache, 'stage-seconds.json');
  fs.mkdirSync(cache, { recursive: true });
  const stageSeconds: Record<string, number> = fs.existsSync(timesFile) ? readJson(timesFile) : {};
  const timed = async <T>(stage: string, work: () => Promise<T> | T): Promise<T> => {
    const started = performance.now();
    const result = await work();
    // Training spans sittings, so its time adds up; other stages record their last run.
    const seconds = (performance.now() - started) / 1000;
    stageSeconds[stage] = stage === 'train' ? (stageSeconds[stage] ?? 0) + seconds : seconds;
    fs.writeFileSync(timesFile, JSON.stringify(stageSeconds, null, 1));
    return result;
  };

  // 1. Corpus.
  if (args.stages.has('corpus') && !fs.existsSync(path.join(corpusDir, CORPUS_FILES.manifest))) {
    await timed('fetch+corpus', () => buildCorpus(loadSourceList(), cache, corpusDir, log));
  }
  // Stops after the last requested stage (later stages need earlier outputs, not the reverse).
  const lastStage = Math.max(...[...args.stages].map((st) => ALL_STAGES.indexOf(st)));
  const finished = (stage: string): boolean => ALL_STAGES.indexOf(stage) >= lastStage;
  if (finished('corpus')) return;
  const manifest = readCorpusManifest(corpusDir);
  const train = readCorpusFiles(path.join(corpusDir, CORPUS_FILES.train));
  const heldOut = readCorpusFiles(path.join(corpusDir, CORPUS_FILES.heldOut));
  log(`corpus: ${train.length} training files, ${heldOut.length} held-out files`);

  // 2. Tokenizer, vocabulary size by measurement.
  const tokenizerFile = path.join(tokenizerDir, 'tokenizer.json');
  const vocabFile = path.join(tokenizerDir, 'vocab-measurement.json');
  if (args.stages.has('tokenizer') && !fs.existsSync(tokenizerFile)) {
    await timed('tokenizer', () => {
      const shape: BodyShape = {
        hiddenSize: BODY.hiddenSize,
        numLayers: BODY.numLayers,
        intermediateSize: BODY.intermediateSize,
        attentionWidth: 4 * BODY.hiddenSize,
        seqLen: BODY.contextLength,
      };
      const choice = chooseVocabSize(train, heldOut, shape, undefined, log);
      fs.mkdirSync(tokenizerDir, { recursive: true });
      fs.writeFileSync(tokenizerFile, JSON.stringify(choice.tokenizer));
      fs.writeFileSync(vocabFile, JSON.stringify({ chosen: choice.chosen, table: choice.table }, null, 1));
    });
  }
  if (finished('tokenizer')) return;
  const tokenizer = await Tokenizer.load(tokenizerFile);
  const vocab = readJson<{ chosen: number; table: VocabMeasurement[] }>(vocabFile);
  const eos = tokenizer.tokenId('<|endoftext|>')!;
  const config = modelConfig(vocab.chosen, eos);
  log(`model: ${countParameters(config)} parameters, vocabulary ${vocab.chosen}`);

  // 3. Token stream.
  const tokenizerHash = sha256OfFileSync(tokenizerFile).slice(0, 12);
  // 'char' streams keep the name they had before there was a choice of cut points.
  const streamFile = path.join(
    cache,
    `stream-${tokenizerHash}-${manifest.sha256.train.slice(0, 12)}${args.fimCuts === 'char' ? '' : `-${args.fimCuts}`}.bin`,
  );
  const streamStatsFile = `${streamFile}.json`;
  if (args.stages.has('stream') && !fs.existsSync(streamStatsFile)) {
    await timed('stream', () => {
      const { tokens, stats } = encodeTrainingStream(train, tokenizer, {
        fimRate: FIM_RATE,
        seed: 17,
        fimCuts: args.fimCuts,
        log,
      });
      fs.writeFileSync(streamFile, tokens);
      fs.writeFileSync(streamStatsFile, JSON.stringify(stats));
    });
  }
  const streamStats = readJson<PackStats>(streamStatsFile);
  const streamBytes = fs.readFileSync(streamFile);
  const stream = new Int32Array(streamBytes.buffer, streamBytes.byteOffset, streamBytes.byteLength / 4);
  log(`stream: ${stream.length} tokens (${streamStats.fimExamples} FIM examples)`);
  if (finished('stream')) return;

  // 4. Train (resumes from runDir).
  const hyperparameters: PretrainHyperparameters = { ...DEFAULT_HYPERPARAMETERS, batch: 4, seqLen: BODY.contextLength };
  const length: RunLength = args.steps !== undefined ? { steps: args.steps } : { seconds: args.minutes * 60 };
  if (args.fresh) {
    fs.rmSync(runDir, { recursive: true, force: true });
    delete stageSeconds.train;
  }
  let progress: TrainProgress | undefined;
  if (args.stages.has('train')) {
    const result = await timed('train', () =>
      trainRun({
        config,
        hyperparameters,
        length,
        stream,
        runDir,
        extend: args.extend,
        fimCuts: args.fimCuts,
        log,
        sittingSeconds: args.sittingMinutes !== undefined ? args.sittingMinutes * 60 : undefined,
      }),
    );
    progress = result.progress;
    if (!progress.done) {
      log('training is not finished; run again to resume');
      return;
    }
  }
  const stateFile = path.join(runDir, 'state.json');
  if (!fs.existsSync(stateFile)) throw new Error('no training run to export (run the train stage first)');
  progress = readJson<{ progress: TrainProgress }>(stateFile).progress;

  // 5. Export models/ (fp16) and evaluate the exported weights, as users will load them.
  if (args.stages.has('export')) {
    await timed('export', async () => {
      const { weights } = loadRunWeights(runDir);
      await saveCheckpoint(out, config, weights, { dtype: 'float16' });
      // Hugging Face's name field: what adapter manifests and reports call this base model.
      const configFile = path.join(out, 'config.json');
      fs.writeFileSync(
        configFile,
        `${JSON.stringify({ _name_or_path: MODEL_NAME, ...readJson<Record<string, unknown>>(configFile) }, null, 2)}\n`,
      );
      fs.copyFileSync(tokenizerFile, path.join(out, 'tokenizer.json'));
    });
  }
  // Metrics are kept per weights (sha256), so several exports can be evaluated side by side.
  const metricsFileFor = (sha256: string): string => path.join(cache, `metrics-${sha256.slice(0, 16)}.json`);
  if (args.stages.has('eval')) {
    await timed('eval', async () => {
      const checkpoint = await loadCheckpoint(out);
      const shipped = await Tokenizer.load(path.join(out, 'tokenizer.json'));
      const metrics = await evaluateModel(checkpoint.config, checkpoint.weights, shipped, heldOut, {
        bytesPerLanguage: args.evalBytes,
        linesPerLanguage: args.evalLines,
        seqLen: BODY.contextLength,
        threads: hyperparameters.threads,
        log,
      });
      const samples = await sampleCompletions(checkpoint.config, checkpoint.weights, shipped, heldOut, {
        seqLen: BODY.contextLength,
        threads: hyperparameters.threads,
      });
      fs.writeFileSync(
        metricsFileFor(checkpoint.sha256),
        JSON.stringify({ weightsSha256: checkpoint.sha256, metrics, samples }, null, 1),
      );
      process.stdout.write(
        `${JSON.stringify({ metrics, progress: { steps: progress!.step, tokens: progress!.tokens, trainSeconds: progress!.trainSeconds } }, null, 2)}\n`,
      );
    });
  }

  // 6. The model card, from the recorded numbers of the exported weights.
  if (args.stages.has('card')) {
    const checkpoint = await loadCheckpoint(out);
    const metricsFile = metricsFileFor(checkpoint.sha256);
    if (!fs.existsSync(metricsFile)) throw new Error(`no metrics for the weights in ${out}; run the eval stage first`);
    const recorded = readJson<{
      weightsSha256: string;
      metrics: Parameters<typeof renderModelCard>[0]['metrics'];
      samples: Parameters<typeof renderModelCard>[0]['samples'];
    }>(metricsFile);
    if (recorded.weightsSha256 !== checkpoint.sha256)
      throw new Error(`${metricsFile} belongs to other weights than ${out}; run the eval stage again`);
    const card = renderModelCard({
      name: MODEL_NAME,
      configJson: toHfConfigJson(checkpoint.config),
      parameters: countParameters(checkpoint.config),
      embeddingParameters: checkpoint.config.vocabSize * checkpoint.config.hiddenSize,
      weightsBytes: fs.statSync(path.join(out, 'model.safetensors')).size,
      weightsSha256: checkpoint.sha256,
      manifest,
      vocab,
      stream: {
        tokens: stream.length,
        fimExamples: streamStats.fimExamples,
        plainDocuments: streamStats.plainDocuments,
        fimRate: FIM_RATE,
      },
      hyperparameters,
      progress: progress!,
      hardware: hardware(),
      stageSeconds,
      metrics: recorded.metrics,
      samples: recorded.samples,
    });
    fs.writeFileSync(path.join(out, 'MODEL_CARD.md'), card);
    log(`wrote ${path.relative(process.cwd(), out)}/ (config.json, tokenizer.json, model.safetensors, MODEL_CARD.md)`);
  }
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (error: Error) => {
      process.stderr.write(`pretrain: ${error.message}\n`);
      process.exit(1);
    },
  );
}
