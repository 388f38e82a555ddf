// How to serve what `idiom adapters export` wrote, on the engines teams already run: an Ollama
// Modelfile, a llama-server command line and a vLLM command line. Paths are absolute, so the
// lines work from any folder.

export interface ServeInstructions {
  /** The model name the engines answer to (`model` in /v1/completions). */
  servedName: string;
  /** An Ollama Modelfile (also written to the export folder for gguf and merged). */
  modelfile: string;
  ollama: string;
  llamaServer: string;
  vllm: string;
}

const quote = (text: string): string => (/^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`);

export interface ServeInput {
  servedName: string;
  /** The base's Hugging Face id or folder (vLLM and Ollama's safetensors import take it). */
  baseName: string;
  rank: number | null;
}

/** GGUF: base + LoRA for Ollama and llama-server; vLLM takes the PEFT export. */
export function ggufServe(input: ServeInput & { baseGguf: string; adapterGguf: string | null; peftHint: string }) {
  const modelfile = `FROM ${input.baseGguf}\n${input.adapterGguf ? `ADAPTER ${input.adapterGguf}\n` : ''}`;
  return instructions(input, modelfile, {
    llamaServer: `llama-server -m ${quote(input.baseGguf)}${input.adapterGguf ? ` --lora ${quote(input.adapterGguf)}` : ''} --alias ${quote(input.servedName)} --port 8080`,
    vllm: `${vllmLora(input, '<peft folder>')}   # vLLM loads PEFT files: ${input.peftHint}`,
  });
}

/** PEFT: vLLM multi-LoRA and Ollama's safetensors adapter import; llama-server takes the GGUF export. */
export function peftServe(input: ServeInput & { folder: string; ggufHint: string }) {
  const modelfile = `FROM ${input.baseName}\nADAPTER ${input.folder}\n`;
  return instructions(input, modelfile, {
    llamaServer: `llama-server -m <base.gguf> --lora <adapter.gguf> --alias ${quote(input.servedName)}   # llama.cpp loads GGUF: ${input.ggufHint}`,
    vllm: vllmLora(input, input.folder),
  });
}

/** Merged: one plain model, no adapter to attach. */
export function mergedServe(input: ServeInput & { folder: string; ggufHint: string }) {
  const modelfile = `FROM ${input.folder}\n`;
  return instructions(input, modelfile, {
    llamaServer: `llama-server -m <model.gguf> --alias ${quote(input.servedName)}   # llama.cpp loads GGUF: ${input.ggufHint}`,
    vllm: `vllm serve ${quote(input.folder)} --served-model-name ${quote(input.servedName)}`,
  });
}

function vllmLora(input: ServeInput, folder: string): string {
  const rank = input.rank ? ` --max-lora-rank ${Math.max(8, 2 ** Math.ceil(Math.log2(input.rank)))}` : '';
  return `vllm serve ${quote(input.baseName)} --enable-lora${rank} --lora-modules ${quote(`${input.servedName}=${folder}`)}`;
}

function instructions(
  input: ServeInput,
  modelfile: string,
  lines: { llamaServer: string; vllm: string },
): ServeInstructions {
  return {
    servedName: input.servedName,
    modelfile,
    ollama: `ollama create ${quote(input.servedName)} -f Modelfile`,
    ...lines,
  };
}
