// `idiom adapters export <id|active> --format peft|gguf|merged`: an adapter of the registry in the
// form another engine serves. The export folder appears whole or not at all, and is never
// overwritten; the registry is only read.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveBaseDir } from '../../model/base-model';
import { loadCheckpoint } from '../../model/checkpoint';
import { Tokenizer } from '../../model/tokenizer/tokenizer';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, writeFolderAtomically, writeTextAtomically } from '../folder';
import { MANIFEST_FILE } from '../manifest';
import type { Mode } from '../mode';
import { Registry, findRepoRoot, loadById, registryLocation } from '../registry';
import { writeGguf } from './gguf-file';
import { GGUF_PRECISIONS, baseGguf, ggufArchitecture, loraGguf, ownGguf, type GgufPrecision } from './gguf';
import { foldAdapter, writeMergedModel } from './merged';
import { peftLayoutProblems } from './peft-check';
import { ggufServe, mergedServe, peftServe, type ServeInstructions } from './serve';

export const EXPORT_FORMATS = ['peft', 'gguf', 'merged'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export interface ExportOptions {
  /** Any folder inside the repository. */
  repo: string;
  /** Registry folder, absolute or relative to the repository (default .idiom). */
  registry?: string;
  /** An adapter id, or "active" for the one active for `mode`. */
  which: string;
  mode: Mode;
  format: string;
  /** Export folder; must not exist. Default <registry>/exports/<id>-<format>. */
  out?: string;
  /** Base model folder; default the embedded model. */
  base?: string;
  /** Matrices of a written base GGUF; default f16. */
  precision?: string;
}

export interface ExportResult {
  id: string;
  kind: 'lora' | 'full';
  format: ExportFormat;
  out: string;
  /** Files written, relative to `out`. */
  files: string[];
  /** The base GGUF used: written into `out`, or the base folder's own. */
  baseGguf?: string;
  serve: ServeInstructions;
  /** Things the user should know (matrices kept at f16 in a q8_0 export, …). */
  notes: string[];
}

/** The model name an exported adapter is served under (the endpoint asks for it by this name). */
export function servedModelName(id: string): string {
  return `idiom-${id}`;
}

export async function exportAdapter(options: ExportOptions): Promise<ExportResult> {
  if (!EXPORT_FORMATS.includes(options.format as ExportFormat))
    throw new Error(`unknown export format "${options.format}" (expected ${EXPORT_FORMATS.join(', ')})`);
  const format = options.format as ExportFormat;
  const precision = (options.precision ?? 'f16') as GgufPrecision;
  if (!GGUF_PRECISIONS.includes(precision))
    throw new Error(`unknown GGUF precision "${options.precision}" (expected ${GGUF_PRECISIONS.join(', ')})`);

  const start = path.resolve(options.repo);
  if (!fs.existsSync(start) || !fs.statSync(start).isDirectory())
    throw new Error(`${start}: no such repository folder`);
  const repo = findRepoRoot(start);
  const location = registryLocation(repo, { location: options.registry });
  if (!fs.existsSync(location)) throw new Error(`no adapter registry at ${location} (train one with \`idiom train\`)`);
  const registry = await Registry.open(repo, { location: options.registry, readOnly: true });
  let id = options.which;
  if (id === 'active') {
    const active = await registry.activeId(options.mode);
    if (!active) throw new Error(`no adapter is active for mode ${options.mode} (give an id: \`idiom adapters list\`)`);
    id = active;
  }
  const manifest = await registry.manifest(id);

  const baseDir = resolveBaseDir(options.base);
  if (format === 'gguf') {
    // Refuse what llama.cpp cannot take before reading any weights.
    const raw = JSON.parse(fs.readFileSync(path.join(baseDir, 'config.json'), 'utf8')) as { model_type?: unknown };
    ggufArchitecture(String(raw.model_type));
  }
  const checkpoint = await loadCheckpoint(baseDir);
  if (format === 'gguf') ggufArchitecture(checkpoint.config.modelType, checkpoint.config);
  const model = await loadById(registry, id, checkpoint);

  const out = path.resolve(options.out ?? path.join(location, 'exports', `${id}-${format}`));
  if (fs.existsSync(out)) throw new Error(`${out} already exists; give another --out or remove it`);
  const servedName = servedModelName(id);
  const baseName = manifest.base.name === path.basename(baseDir) ? baseDir : manifest.base.name;
  const rank = model.kind === 'lora' ? model.adapter.config.r : null;
  const hint = (other: ExportFormat) => `idiom adapters export ${id} --format ${other}`;
  const files: string[] = [];
  const notes: string[] = [];
  let serve: ServeInstructions;
  let baseGgufFile: string | undefined;

  if (format === 'peft') {
    if (model.kind !== 'lora')
      throw new Error(`adapter ${id} is a full fine-tune, not a LoRA adapter: export it with --format merged or gguf`);
    const problems = peftLayoutProblems(model.adapter, checkpoint.config);
    if (problems.length > 0)
      throw new Error(`adapter ${id} does not follow PEFT's layout: ${problems.slice(0, 3).join('; ')}`);
    await writeFolderAtomically(out, async (temp) => {
      for (const name of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, MANIFEST_FILE]) {
        fs.copyFileSync(path.join(model.adapter.dir, name), path.join(temp, name));
        files.push(name);
      }
    });
    serve = peftServe({ servedName, baseName, rank, folder: out, ggufHint: hint('gguf') });
  } else if (format === 'merged') {
    const weights =
      model.kind === 'lora' ? foldAdapter(checkpoint.weights, model.adapter) : model.model.checkpoint.weights;
    serve = mergedServe({ servedName, baseName, rank, folder: out, ggufHint: hint('gguf') });
    const modelfile = serve.modelfile;
    await writeFolderAtomically(out, async (temp) => {
      files.push(...(await writeMergedModel(temp, checkpoint.config, weights, baseDir)));
      fs.copyFileSync(path.join(registry.adapterPath(id), MANIFEST_FILE), path.join(temp, MANIFEST_FILE));
      writeTextAtomically(path.join(temp, 'Modelfile'), modelfile);
      files.push(MANIFEST_FILE, 'Modelfile');
    });
  } else {
    const tokenizerFile = path.join(baseDir, 'tokenizer.json');
    const own = model.kind === 'lora' ? ownGguf(baseDir) : null;
    const baseFile = `${model.kind === 'lora' ? 'base' : 'model'}.${precision}.gguf`;
    baseGgufFile = own ?? path.join(out, baseFile);
    const adapterFile = model.kind === 'lora' ? path.join(out, 'adapter.gguf') : null;
    serve = ggufServe({
      servedName,
      baseName,
      rank,
      baseGguf: baseGgufFile,
      adapterGguf: adapterFile,
      peftHint: hint('peft'),
    });
    const modelfile = serve.modelfile;
    await writeFolderAtomically(out, async (temp) => {
      if (!own) {
        const weights = model.kind === 'lora' ? checkpoint.weights : model.model.checkpoint.weights;
        const tokenizerJson = JSON.parse(fs.readFileSync(tokenizerFile, 'utf8')) as Record<string, unknown>;
        const base = baseGguf({
          config: checkpoint.config,
          weights,
          tokenizerJson,
          tokenizer: await Tokenizer.load(tokenizerFile),
          name: model.kind === 'lora' ? manifest.base.name : servedName,
          precision,
        });
        writeGguf(path.join(temp, baseFile), base.metadata, base.tensors);
        files.push(baseFile);
        if (base.fallbacks.length > 0)
          notes.push(
            `${base.fallbacks.length} matrices stay f16: q8_0 needs rows of whole 32-value blocks (${base.fallbacks[0]}, …)`,
          );
      }
      if (model.kind === 'lora') {
        const lora = loraGguf(model.adapter, checkpoint.config, servedName);
        writeGguf(path.join(temp, 'adapter.gguf'), lora.metadata, lora.tensors);
        files.push('adapter.gguf');
      }
      writeTextAtomically(path.join(temp, 'Modelfile'), modelfile);
      files.push('Modelfile');
    });
  }
  return {
    id,
    kind: model.kind,
    format,
    out,
    files,
    ...(baseGgufFile ? { baseGguf: baseGgufFile } : {}),
    serve,
    notes,
  };
}

/** What the command prints: where the files went and the three ways to serve them. */
export function formatExport(result: ExportResult): string {
  const lines = [`exported adapter ${result.id} (${result.format}) to ${result.out}`];
  for (const file of result.files) lines.push(`  ${file}`);
  if (result.baseGguf && !result.baseGguf.startsWith(result.out)) lines.push(`  base: ${result.baseGguf}`);
  for (const note of result.notes) lines.push(`note: ${note}`);
  lines.push('', 'Ollama (Modelfile):');
  for (const line of result.serve.modelfile.trimEnd().split('\n')) lines.push(`  ${line}`);
  lines.push(`  ${result.serve.ollama}`);
  lines.push('llama-server:', `  ${result.serve.llamaServer}`);
  lines.push('vLLM:', `  ${result.serve.vllm}`);
  return `${lines.join('\n')}\n`;
}
