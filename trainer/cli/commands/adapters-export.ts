import type { Command } from 'commander';
import { EXPORT_FORMATS, exportAdapter, formatExport } from '../../adapters/export/export';
import { GGUF_PRECISIONS } from '../../adapters/export/gguf';
import { MODES, type Mode } from '../../adapters/mode';

// `idiom adapters export <id|active> --format peft|gguf|merged [--out DIR]`: an adapter in the form
// llama.cpp / Ollama / vLLM serve, and the lines that serve it. --json prints the ExportResult.

interface ExportCommandOptions {
  format: string;
  out?: string;
  base?: string;
  precision: string;
  repo?: string;
  registry?: string;
  mode: string;
  json?: boolean;
}

export function registerAdaptersExportCommand(adapters: Command): void {
  adapters
    .command('export')
    .description('write an adapter as PEFT files, GGUF (llama.cpp, Ollama) or a merged Hugging Face model')
    .argument('<id>', 'adapter id, or "active" for the one active for --mode')
    .requiredOption('--format <format>', EXPORT_FORMATS.join(' | '))
    .option('--out <dir>', 'export folder, which must not exist (default <registry>/exports/<id>-<format>)')
    .option('--base <dir>', 'base model folder (default: the embedded model)')
    .option('--precision <type>', `gguf: matrices of the base GGUF, ${GGUF_PRECISIONS.join(' | ')}`, 'f16')
    .option('--repo <dir>', 'repository (default: the one around the current folder)')
    .option('--registry <dir>', 'registry folder, absolute or relative to the repository (default .idiom)')
    .option('--mode <mode>', `mode whose active adapter "active" names: ${MODES.join(', ')}`, 'complete')
    .option('--json', 'print one JSON object on stdout')
    .action(async (which: string, _local: unknown, command: Command) => {
      // `idiom adapters` parses --repo, --registry, --mode, --out and --json wherever they stand.
      const options = command.optsWithGlobals<ExportCommandOptions>();
      if (!MODES.includes(options.mode as Mode))
        throw new Error(`unknown mode "${options.mode}" (expected ${MODES.join(', ')})`);
      const result = await exportAdapter({
        repo: options.repo ?? process.cwd(),
        registry: options.registry,
        which,
        mode: options.mode as Mode,
        format: options.format,
        out: options.out,
        base: options.base,
        precision: options.precision,
      });
      process.stdout.write(options.json ? `${JSON.stringify(result)}\n` : formatExport(result));
    });
}
