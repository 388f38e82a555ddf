import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { baseGguf, GGUF_PRECISIONS, type GgufPrecision } from '../../trainer/adapters/export/gguf';
import { writeGguf } from '../../trainer/adapters/export/gguf-file';
import { packageRoot } from '../../trainer/model/base-model';
import { readModelConfigFile } from '../../trainer/model/config';
import { randomLazyWeights } from '../../trainer/model/lazy-weights';
import { Rng } from '../../trainer/model/random';
import { Tokenizer } from '../../trainer/model/tokenizer/tokenizer';
import { median, referenceConfig } from '../../trainer/tools/bench/reference';
import { round } from '../../trainer/util/round';
import { llamaRuntimeInstalled, loadLlama } from './llama';

// llama.cpp's side of `idiom bench infer`: prefill and decode speed of node-llama-cpp's prebuilt
// CPU binary on the same shape and the same random weights (randomLazyWeights seed 1, as bench
// infer draws them), written as a base GGUF by the exporter's own writer with the embedded
// model's tokenizer (padded to the config's vocabulary). Prints one JSON object.
//
//   npx tsx test/llama/peer-bench.ts --model-config test/fixtures/model-shapes/qwen2.5-coder-0.5b.json \
//     --precision q8_0 [--gguf FILE] [--threads 2] [--prompt 256] [--decode 32] [--repeats 3]
//
// Without --model-config it runs the reference shape. --gguf keeps the GGUF (made once, then
// reused); without it the GGUF goes to a temporary folder that is removed at the end.
// Timed as bench infer times Idiom: prefill = the prompt from an empty cache up to the first
// greedy token (median of the repeats); decode = one greedy token per step after the prompt.

interface Options {
  modelConfig?: string;
  precision: GgufPrecision;
  gguf?: string;
  threads: number;
  prompt: number;
  decode: number;
  repeats: number;
}

function parseArgs(argv: string[]): Options {
  const options: Options = { precision: 'q8_0', threads: 2, prompt: 256, decode: 32, repeats: 3 };
  const count = (flag: string, value: string | undefined) => {
    const n = Number(value);
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`${flag} needs a positive integer, got ${value}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--model-config') options.modelConfig = value;
    else if (flag === '--gguf') options.gguf = value;
    else if (flag === '--precision') {
      if (!GGUF_PRECISIONS.includes(value as GgufPrecision))
        throw new Error(`--precision must be one of ${GGUF_PRECISIONS.join(', ')}, got ${value}`);
      options.precision = value as GgufPrecision;
    } else if (flag === '--threads') options.threads = count(flag, value);
    else if (flag === '--prompt') options.prompt = count(flag, value);
    else if (flag === '--decode') options.decode = count(flag, value);
    else if (flag === '--repeats') options.repeats = count(flag, value);
    else throw new Error(`unknown option ${flag}`);
  }
  return options;
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  if (!llamaRuntimeInstalled()) throw new Error('node-llama-cpp is not installed: run test/llama/runtime/install.sh');
  const cfg = options.modelConfig ? readModelConfigFile(options.modelConfig) : referenceConfig();
  const temp = options.gguf ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-peer-bench-'));
  const gguf = options.gguf ?? path.join(temp!, `model.${options.precision}.gguf`);
  try {
    if (!fs.existsSync(gguf)) {
      process.stderr.write(`peer-bench: writing ${gguf}\n`);
      const tokenizerFile = path.join(packageRoot()!, 'models', 'tokenizer.json');
      const base = baseGguf({
        config: cfg,
        weights: randomLazyWeights(cfg, 1),
        tokenizerJson: JSON.parse(fs.readFileSync(tokenizerFile, 'utf8')) as Record<string, unknown>,
        tokenizer: await Tokenizer.load(tokenizerFile),
        name: 'peer-bench',
        precision: options.precision,
      });
      writeGguf(gguf, base.metadata, base.tensors);
    }
    process.stdout.write(`${JSON.stringify(await measure(gguf, cfg.vocabSize, options))}\n`);
  } finally {
    if (temp) fs.rmSync(temp, { recursive: true, force: true });
  }
}

async function measure(gguf: string, vocabSize: number, options: Options): Promise<Record<string, unknown>> {
  const rng = new Rng(2);
  const prompt = Array.from({ length: options.prompt }, () => rng.int(vocabSize));
  const llama = await loadLlama();
  try {
    const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
    const context = await model.createContext({
      contextSize: options.prompt + options.decode + 16,
      batchSize: 512,
      threads: options.threads,
      flashAttention: false,
      // f32 cache, as Idiom keeps its cache.
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    });
    const sequence = context.getSequence();
    const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
    const step = async (token: number) => (await sequence.controlledEvaluate([[token, greedy]]))[0]?.next.token ?? 0;
    const prefill = async () => {
      await sequence.clearHistory();
      const input: Parameters<typeof sequence.controlledEvaluate>[0] = prompt.slice(0, -1);
      input.push([prompt[prompt.length - 1], greedy]);
      const start = performance.now();
      const next = (await sequence.controlledEvaluate(input))[prompt.length - 1]?.next.token ?? 0;
      return { ms: performance.now() - start, next };
    };
    // Warm-up, as bench infer warms Idiom's session: the prompt and a few steps.
    let { next } = await prefill();
    for (let i = 0; i < 8; i++) next = await step(next);
    const prefillTimes: number[] = [];
    for (let r = 0; r < options.repeats; r++) {
      const run = await prefill();
      prefillTimes.push(run.ms);
      next = run.next;
    }
    const stepTimes: number[] = [];
    for (let i = 0; i < options.decode; i++) {
      const start = performance.now();
      next = await step(next);
      stepTimes.push(performance.now() - start);
    }
    sequence.dispose();
    await context.dispose();
    await model.dispose();
    return {
      engine: 'llama.cpp (node-llama-cpp)',
      precision: options.precision,
      prefillMs: round(median(prefillTimes), 3),
      decodeMsPerToken: round(stepTimes.reduce((a, b) => a + b, 0) / stepTimes.length, 3),
      decodeP50MsPerToken: round(median(stepTimes), 3),
      threads: options.threads,
      promptTokens: options.prompt,
      decodeTokens: options.decode,
      gguf: path.basename(gguf),
    };
  } finally {
    await llama.dispose();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`peer-bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
