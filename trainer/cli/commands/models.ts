import * as path from 'node:path';
import { type Command, Option } from 'commander';
import { packageRoot } from '../../model/base-model';
import {
  formatBytes,
  formatParameters,
  listLocalModels,
  machineMemory,
  type LocalModel,
  type ServingPrecision,
} from '../../model/hub/catalog';
import { hubCacheDir } from '../../model/hub/cache';
import { DEFAULT_HUB_ENDPOINT, downloadModel, type DownloadProgress } from '../../model/hub/download';
import type { ServingPrecisionSetting } from '../../model/precision';

// `idiom models list`: the base models on this machine (the Hugging Face cache, --base, the embedded
// model) with their size, the memory they need and whether they can serve completions.
// `idiom models download <id>`: fetches one from the Hub into the cache (resumable, hash-checked).

const PRECISIONS: readonly ServingPrecision[] = ['float32', 'int8', 'int4'];

export function registerModelsCommand(program: Command): void {
  const models = program.command('models').description('list the base models on this machine, or download one');
  models
    .command('list', { isDefault: true })
    .description('base models in the Hugging Face cache, --base DIR and the embedded model')
    .option('--base <dir>', 'a model folder to list too (as idiom.baseModelPath)')
    .addOption(
      new Option('--precision <p>', 'serving precision the memory is computed for')
        .choices([...PRECISIONS])
        .default('float32'),
    )
    .option('--json', 'print one JSON object on stdout')
    .action((options: { base?: string; precision: ServingPrecision; json?: boolean }) => {
      const root = packageRoot();
      const memory = machineMemory();
      const list = listLocalModels({
        embedded: root ? path.join(root, 'models') : '',
        configured: options.base ? path.resolve(options.base) : '',
        precision: options.precision,
        memory,
      });
      if (options.json) process.stdout.write(`${JSON.stringify({ cache: hubCacheDir(), memory, models: list })}\n`);
      else process.stdout.write(formatList(list, memory.total));
    });
  models
    .command('download')
    .description('download a model from the Hugging Face Hub into its cache (the only network access Idiom makes)')
    .argument('<id>', 'model id, e.g. Qwen/Qwen2.5-Coder-0.5B')
    .option('--revision <rev>', 'branch, tag or commit', 'main')
    .option('--endpoint <url>', 'Hub endpoint or mirror; "" turns downloads off (default $HF_ENDPOINT or the Hub)')
    .addOption(
      new Option('--precision <p>', 'serving precision the memory check uses (auto: int8 above 100M parameters)')
        .choices(['auto', ...PRECISIONS])
        .default('auto'),
    )
    .option('--json', 'print one JSON object on stdout')
    .action(
      async (
        id: string,
        options: { revision: string; endpoint?: string; precision: ServingPrecisionSetting; json?: boolean },
      ) => {
        const endpoint = options.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_HUB_ENDPOINT;
        const result = await downloadModel(id, {
          endpoint,
          revision: options.revision,
          precision: options.precision,
          onProgress: progressPrinter(),
        });
        if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
        else
          process.stdout.write(
            `${id}@${result.commit.slice(0, 12)}: ${result.files.length} files in ${result.path}` +
              `${result.resumed.length > 0 ? ` (resumed ${result.resumed.join(', ')})` : ''}\n` +
              `use it with --base ${result.path}, or choose it with "Idiom: Choose base model"\n`,
          );
      },
    );
}

/** One stderr line per file at most every 10% (and when it is done). */
function progressPrinter(): (progress: DownloadProgress) => void {
  let file = '';
  let step = -1;
  return (progress) => {
    const tenth = progress.fileSize === 0 ? 10 : Math.floor((progress.fileBytes / progress.fileSize) * 10);
    if (progress.file === file && tenth === step) return;
    file = progress.file;
    step = tenth;
    process.stderr.write(
      `${progress.file}: ${tenth * 10}% of ${formatBytes(progress.fileSize)} (all files: ${formatBytes(progress.bytes)} of ${formatBytes(progress.total)})\n`,
    );
  };
}

function formatList(models: LocalModel[], total: number): string {
  const lines: string[] = [];
  if (models.length === 0) lines.push(`no models in ${hubCacheDir()} (download one with \`idiom models download ID\`)`);
  else {
    const rows = [['MODEL', 'PARAMS', 'DTYPE', 'MEMORY', 'INT8', 'FIM', 'PATH']];
    for (const m of models) {
      rows.push([
        `${m.id}${m.refs.length > 0 ? `@${m.refs.join(',')}` : ''}`,
        m.parameters === null ? '?' : formatParameters(m.parameters),
        m.dtype ?? '?',
        m.memoryBytes === null ? '?' : `${formatBytes(m.memoryBytes)} (${m.precision})`,
        m.int8MemoryBytes === null ? '?' : formatBytes(m.int8MemoryBytes),
        m.fim ?? 'no',
        m.path,
      ]);
    }
    const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
    for (const row of rows)
      lines.push(
        row
          .map((cell, i) => cell.padEnd(widths[i]))
          .join('  ')
          .trimEnd(),
      );
    for (const m of models) if (m.problem) lines.push(`${m.id}: cannot serve: ${m.problem}`);
  }
  lines.push(`memory: ${formatBytes(total)} on this machine`);
  return `${lines.join('\n')}\n`;
}
