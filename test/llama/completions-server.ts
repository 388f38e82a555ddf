import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadLlama } from './llama';

// A model server for the endpoint tests: llama.cpp (node-llama-cpp) serving a GGUF base and LoRA
// as POST /v1/completions, greedy, with per-token log probabilities, as llama-server and vLLM
// answer it. Only what Idiom sends is implemented: prompt, max_tokens, stop, logprobs.

type Llama = Awaited<ReturnType<typeof loadLlama>>;
type Model = Awaited<ReturnType<Llama['loadModel']>>;
type Context = Awaited<ReturnType<Model['createContext']>>;

/** Positions of the one context every request reuses (Idiom's prompts stay well inside). */
const CONTEXT_SIZE = 2048;

interface CompletionBody {
  prompt?: unknown;
  max_tokens?: unknown;
  stop?: unknown;
}

export interface CompletionsServer {
  url: string;
  /** Requests answered so far. */
  answered: number;
  close(): Promise<void>;
}

/** log-softmax of `logits` at `token`. */
function logprobOf(logits: Map<number, number>, token: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (const value of logits.values()) max = Math.max(max, value);
  let sum = 0;
  for (const value of logits.values()) sum += Math.exp(value - max);
  return (logits.get(token) ?? Number.NEGATIVE_INFINITY) - max - Math.log(sum);
}

async function complete(model: Model, context: Context, eos: ReadonlySet<number>, body: CompletionBody) {
  const prompt = String(body.prompt ?? '');
  const maxTokens = Math.min(Number(body.max_tokens ?? 16), CONTEXT_SIZE / 4);
  const stops = Array.isArray(body.stop) ? body.stop.map(String) : [];
  const ids = model.tokenize(prompt, true).slice(-(CONTEXT_SIZE - maxTokens - 1));
  const sequence = context.getSequence();
  try {
    const next = { generateNext: { token: true, logits: true, options: { temperature: 0 } } };
    const input: Parameters<typeof sequence.controlledEvaluate>[0] = [...ids];
    input[input.length - 1] = [ids[ids.length - 1], next];
    let step = (await sequence.controlledEvaluate(input))[ids.length - 1];
    const tokens: number[] = [];
    const pieces: string[] = [];
    const logprobs: number[] = [];
    let text = '';
    while (step?.next.token !== undefined && step.next.token !== null && tokens.length < maxTokens) {
      const token = step.next.token;
      if (eos.has(token)) break;
      tokens.push(token);
      const after = model.detokenize(tokens);
      pieces.push(after.slice(text.length));
      logprobs.push(logprobOf(step.next.logits ?? new Map(), token));
      text = after;
      const stop = stops.map((s) => text.indexOf(s)).filter((at) => at >= 0);
      if (stop.length > 0) {
        text = text.slice(0, Math.min(...stop));
        break;
      }
      step = (await sequence.controlledEvaluate([[token, next]]))[0];
    }
    return {
      choices: [{ index: 0, text, logprobs: { tokens: pieces, token_logprobs: logprobs }, finish_reason: 'stop' }],
    };
  } finally {
    sequence.dispose();
  }
}

/** Starts the server on 127.0.0.1; one request at a time, as a one-slot llama-server. */
export async function startCompletionsServer(
  baseGguf: string,
  loraGguf: string,
  eosTokenIds: readonly number[],
): Promise<CompletionsServer> {
  const llama = await loadLlama();
  const model = await llama.loadModel({ modelPath: baseGguf, gpuLayers: 0 });
  const eos = new Set(eosTokenIds);
  // One context for the server's life, as llama-server keeps one: requests take turns on it.
  const context = await model.createContext({
    contextSize: CONTEXT_SIZE,
    batchSize: 512,
    threads: 2,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    lora: { adapters: [{ filePath: loraGguf, scale: 1 }] },
  });
  let queue: Promise<unknown> = Promise.resolve();
  const state = { answered: 0 };
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.method !== 'POST' || !request.url?.endsWith('/v1/completions')) {
        response.writeHead(404).end('not found');
        return;
      }
      queue = queue.then(async () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as CompletionBody;
          const answer = await complete(model, context, eos, body);
          state.answered++;
          response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
        } catch (error) {
          response.writeHead(500).end(String(error));
        }
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get answered() {
      return state.answered;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await queue;
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
