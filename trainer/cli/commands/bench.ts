import { type Command, Option } from 'commander';
import type { Precision } from '../../compute/engine/weights';
import type { ServingPrecisionSetting } from '../../model/precision';
import { readModelConfigFile } from '../../model/config';
import { benchInfer } from '../../tools/bench/infer';
import { benchLsp } from '../../tools/bench/lsp';
import { benchQuality, leverVariants, qualityTable } from '../../tools/bench/quality';
import { benchTrain } from '../../tools/bench/train';

// `idiom bench train|infer|lsp|quality`: benchmarks that print one JSON object on stdout (logs go
// to stderr); quality prints a table unless --json.

function positiveInt(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${value}"`);
    return n;
  };
}

function printJson(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

const log = (line: string) => process.stderr.write(`${line}\n`);

const PRECISION_SETTINGS: readonly ServingPrecisionSetting[] = ['auto', 'float32', 'int8', 'int4'];

/** `float32,int8` → ['float32', 'int8']; anything else fails in one line. */
function precisionList(value: string): Precision[] {
  const list = value.split(',').map((p) => p.trim());
  for (const p of list) {
    if (p !== 'float32' && p !== 'int8' && p !== 'int4')
      throw new Error(`--precision takes float32, int8 or int4 (comma-separated), got "${p}"`);
  }
  return list as Precision[];
}

interface BenchTrainCliOptions {
  threads: number;
  steps: number;
  warmup: number;
  method: string;
  batch: number;
  seq: number;
  modelConfig?: string;
  spin?: boolean;
  profile?: string;
  quiet?: boolean;
}

export function registerBenchCommand(program: Command): void {
  const bench = program.command('bench').description('speed benchmarks (JSON on stdout)');

  bench
    .command('train')
    .description(
      'training speed on the reference config (d 512, 8 layers, seq 256, batch 8) and MFU against the same-run MatMul peak',
    )
    .option('--threads <n>', 'ONNX Runtime intra-op threads', positiveInt('--threads'), 2)
    .option('--steps <n>', 'timed steps', positiveInt('--steps'), 5)
    .option('--warmup <n>', 'warm-up steps', positiveInt('--warmup'), 2)
    .option('--method <method>', 'lora or full', 'lora')
    .option('--batch <n>', 'rows per step', positiveInt('--batch'), 8)
    .option('--seq <n>', 'tokens per row', positiveInt('--seq'), 256)
    .option('--spin', 'let idle ONNX Runtime threads spin (faster on an idle machine, slower on a shared one)')
    .option(
      '--model-config <file>',
      'a Hugging Face config.json to bench instead of the reference shape (random weights)',
    )
    .option(
      '--profile <prefix>',
      "write ONNX Runtime's per-node profile of the training session to <prefix>_*.json and report its kernel time by op type",
    )
    .option('--json', 'print JSON (always on)', true)
    .option('--quiet', 'no progress lines on stderr')
    .action(async (opts: BenchTrainCliOptions) => {
      if (opts.method !== 'lora' && opts.method !== 'full')
        throw new Error(`--method must be lora or full, got "${opts.method}"`);
      printJson(
        await benchTrain({
          threads: opts.threads,
          steps: opts.steps,
          warmupSteps: opts.warmup,
          method: opts.method,
          batch: opts.batch,
          seqLen: opts.seq,
          config: opts.modelConfig ? readModelConfigFile(opts.modelConfig) : undefined,
          spinning: opts.spin === true,
          profilePrefix: opts.profile,
          log: opts.quiet ? undefined : log,
        }),
      );
    });

  bench
    .command('infer')
    .description('prefill and decode speed on the reference config, with the same-run weight MatMul time per token')
    .option('--threads <n>', 'ONNX Runtime intra-op threads', positiveInt('--threads'), 2)
    .option(
      '--model-config <file>',
      'a Hugging Face config.json to bench instead of the reference shape (random weights)',
    )
    .option('--base <dir>', 'a checkpoint folder to bench instead (its own weights)')
    .option(
      '--precision <list>',
      'comma-separated float32, int8, int4: the first gets every measurement, the others prefill and decode',
      'float32,int8',
    )
    .option('--prompt <n>', 'prefill tokens', positiveInt('--prompt'), 256)
    .option('--decode <n>', 'decode steps timed', positiveInt('--decode'), 64)
    .option(
      '--profile <prefix>',
      "write ONNX Runtime's per-node profile of decode steps at the first precision to <prefix>_*.json and report where a step's time goes",
    )
    .option('--no-completion', 'skip the completion latency (prefill and decode only)')
    .option('--json', 'print JSON (always on)', true)
    .action(
      async (opts: {
        threads: number;
        modelConfig?: string;
        base?: string;
        precision: string;
        prompt: number;
        decode: number;
        profile?: string;
        completion: boolean;
      }) => {
        printJson(
          await benchInfer({
            threads: opts.threads,
            config: opts.modelConfig ? readModelConfigFile(opts.modelConfig) : undefined,
            base: opts.base,
            precisions: precisionList(opts.precision),
            promptTokens: opts.prompt,
            decodeTokens: opts.decode,
            profilePrefix: opts.profile,
            completion: opts.completion ? undefined : false,
            log,
          }),
        );
      },
    );

  bench
    .command('lsp')
    .description(
      'inline completion latency (cold, typing) and RSS of the real language server over stdio, on a real file',
    )
    .option('--base <dir>', 'base model folder (default: the embedded model)')
    .option(
      '--model-config <file>',
      "a Hugging Face config.json: random weights at its shapes and Qwen's tokenizer (from a checkout's dev dependencies)",
    )
    .addOption(
      new Option('--precision <p>', 'idiom.precision for the server').choices([...PRECISION_SETTINGS]).default('auto'),
    )
    .option('--file <file>', 'source file to complete in (default: server/completion/postprocess.ts)')
    .option('--repo <dir>', "workspace folder: its repository's active adapter serves (default: the base model alone)")
    .option('--cold <n>', 'cold requests (one per line)', positiveInt('--cold'), 24)
    .option('--typed-lines <n>', 'lines typed back one keystroke at a time', positiveInt('--typed-lines'), 4)
    .option('--json', 'print JSON (always on)', true)
    .action(
      async (opts: {
        base?: string;
        modelConfig?: string;
        precision: ServingPrecisionSetting;
        file?: string;
        repo?: string;
        cold: number;
        typedLines: number;
      }) => {
        printJson(
          await benchLsp({
            base: opts.base,
            config: opts.modelConfig ? readModelConfigFile(opts.modelConfig) : undefined,
            precision: opts.precision,
            file: opts.file,
            repo: opts.repo,
            coldRequests: opts.cold,
            typedLines: opts.typedLines,
            log,
          }),
        );
      },
    );

  bench
    .command('quality')
    .description(
      "replays the held-out commits' added lines through the real server: exact lines, accepted characters, precision, latency, against copy references",
    )
    .argument('<repo>', 'repository folder')
    .option('--base <dir>', 'base model folder (default: the embedded model)')
    .option('--adapter <id>', 'adapter id to serve as "adapter" (default: the active one)')
    .option('--lines <n>', 'held-out lines to replay (two points each)', positiveInt('--lines'), 150)
    .option('--seed <n>', 'which lines are sampled', positiveInt('--seed'), 1)
    .option('--mode <mode>', 'complete, or compliance (every suggestion through the policy gate)', 'complete')
    .option(
      '--levers',
      'also serve the adapter with each serving lever (prefix prompt, confidence gate, recall) off in turn',
    )
    .option('--json', 'print JSON instead of a table')
    .action(
      async (
        repo: string,
        opts: {
          base?: string;
          adapter?: string;
          lines: number;
          seed: number;
          mode: string;
          levers?: boolean;
          json?: boolean;
        },
      ) => {
        if (opts.mode !== 'complete' && opts.mode !== 'compliance')
          throw new Error(`--mode must be complete or compliance, got "${opts.mode}"`);
        const extraVariants = opts.levers ? leverVariants(opts.adapter, opts.mode) : [];
        const result = await benchQuality({
          repo,
          base: opts.base,
          adapter: opts.adapter,
          lines: opts.lines,
          seed: opts.seed,
          mode: opts.mode,
          extraVariants,
          log,
        });
        if (opts.json) printJson(result as unknown as Record<string, unknown>);
        else process.stdout.write(`${qualityTable(result)}\n`);
      },
    );
}
