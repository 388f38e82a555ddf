// Generation on a model server the team already runs (llama.cpp's llama-server, vLLM, Ollama, LM
// Studio) instead of the local engine. Only generation moves: the prompt is built here as for the
// local model, and post-processing, the credential filter and the compliance gate run on what comes
// back. Two protocols:
// - 'openai-completions': POST {url}/v1/completions with the prompt as text (the local model's
//   template, so the endpoint should serve the same base: `idiom adapters export` prints how);
// - 'llama-infill': POST {url}/infill with the prefix and suffix; llama-server applies the model's
//   own FIM template.
// A failure marks the endpoint down for a while, so each keystroke does not wait for a timeout; the
// local model serves meanwhile.

import { firstLineLogprob, type GeneratedText } from '../model/host';
import type { EndpointSettings, EndpointState } from '../protocol';

export interface EndpointRequest {
  /** The whole prompt as text (openai-completions). */
  prompt: string;
  /** The prompt's prefix, suffix and context texts (llama-infill). */
  prefixText: string;
  suffixText: string;
  contextText: string;
  maxNewTokens: number;
  stop: readonly string[];
  signal: AbortSignal;
}

/** How long a failed endpoint is left alone before the next request tries it again. */
const RETRY_AFTER_MS = 15_000;

export class EndpointClient {
  private downUntil = 0;
  private lastState: EndpointState | null = null;

  constructor(
    private readonly settings: () => EndpointSettings,
    private readonly apiKey: () => string | null,
    /** The name to ask for when the setting names none (`idiom-<id>` of the serving adapter). */
    private readonly defaultModel: () => string,
    private readonly onState: (state: EndpointState | null) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether requests go to the endpoint now (configured, and not inside a back-off). */
  get active(): boolean {
    return this.settings().url.trim() !== '' && this.now() >= this.downUntil;
  }

  /** Called when the settings change: a new URL deserves a fresh try. */
  reset(): void {
    this.downUntil = 0;
    this.report(null);
  }

  async generate(request: EndpointRequest): Promise<GeneratedText> {
    const settings = this.settings();
    const timeout = AbortSignal.timeout(Math.max(1, settings.timeoutMs));
    const signal = AbortSignal.any([request.signal, timeout]);
    try {
      const result = await this.call(settings, request, signal);
      this.report({ url: settings.url, kind: settings.kind, state: 'up', message: null });
      return result;
    } catch (error) {
      if (request.signal.aborted) throw error; // the user moved on: not the endpoint's fault
      const message = timeout.aborted
        ? `no answer within ${settings.timeoutMs} ms`
        : error instanceof Error
          ? error.message
          : String(error);
      this.downUntil = this.now() + RETRY_AFTER_MS;
      this.report({ url: settings.url, kind: settings.kind, state: 'down', message });
      throw new Error(`endpoint ${settings.url} is down: ${message}`);
    }
  }

  private report(state: EndpointState | null): void {
    if (JSON.stringify(state) === JSON.stringify(this.lastState)) return;
    this.lastState = state;
    this.onState(state);
  }

  private async call(settings: EndpointSettings, request: EndpointRequest, signal: AbortSignal) {
    const base = settings.url.replace(/\/+$/, '');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const key = this.apiKey();
    if (key) headers.authorization = `Bearer ${key}`;
    const body =
      settings.kind === 'openai-completions'
        ? {
            model: settings.model || this.defaultModel(),
            prompt: request.prompt,
            max_tokens: request.maxNewTokens,
            temperature: 0,
            stop: request.stop.slice(0, 4),
            logprobs: 1,
            stream: false,
          }
        : {
            input_prefix: request.prefixText,
            input_suffix: request.suffixText,
            input_extra: request.contextText ? [{ filename: 'context', text: request.contextText }] : [],
            n_predict: request.maxNewTokens,
            temperature: 0,
            stop: request.stop,
            n_probs: 1,
            stream: false,
          };
    const path = settings.kind === 'openai-completions' ? '/v1/completions' : '/infill';
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body), signal });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(cause?.code ?? cause?.message ?? (error as Error).message);
    }
    const text = await response.text();
    if (!response.ok) throw new Error(`HTTP ${response.status} from ${path}: ${oneLine(text).slice(0, 160)}`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${path} answered with something that is not JSON: ${oneLine(text).slice(0, 80)}`);
    }
    return settings.kind === 'openai-completions' ? parseOpenAi(json, path) : parseInfill(json, path);
  }
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** The first line's log probability from per-token strings and log probabilities, when given. */
function confidence(tokens: unknown, logprobs: unknown): number | null {
  if (!Array.isArray(tokens) || !Array.isArray(logprobs) || tokens.length !== logprobs.length) return null;
  if (!tokens.every((t) => typeof t === 'string') || !logprobs.every((p) => typeof p === 'number')) return null;
  const pieces = tokens as string[];
  return firstLineLogprob(
    pieces.map((_, i) => i),
    logprobs as number[],
    (indices) => indices.map((i) => pieces[i]).join(''),
  );
}

function parseOpenAi(json: unknown, path: string): GeneratedText & { firstLineLogprob: number } {
  const choice = (json as { choices?: unknown[] } | null)?.choices?.[0] as
    | { text?: unknown; logprobs?: { tokens?: unknown; token_logprobs?: unknown } | null }
    | undefined;
  if (typeof choice?.text !== 'string') throw new Error(`${path} answered without choices[0].text`);
  const sure = confidence(choice.logprobs?.tokens, choice.logprobs?.token_logprobs);
  // No log probabilities: the server did not say how sure it was, so the gate lets it through.
  return { text: choice.text, firstLineLogprob: sure ?? 0 };
}

function parseInfill(json: unknown, path: string): GeneratedText {
  const answer = json as {
    content?: unknown;
    completion_probabilities?: Array<{ token?: unknown; logprob?: unknown }>;
  } | null;
  if (typeof answer?.content !== 'string') throw new Error(`${path} answered without "content"`);
  const probabilities = Array.isArray(answer.completion_probabilities) ? answer.completion_probabilities : [];
  const sure = confidence(
    probabilities.map((p) => p.token),
    probabilities.map((p) => p.logprob),
  );
  return { text: answer.content, firstLineLogprob: sure ?? 0 };
}
