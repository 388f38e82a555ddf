// Checks the LSP base protocol's framing on stdin before vscode-jsonrpc reads it. That reader
// waits forever for a message whose Content-Length is absent (it reads the body as the next
// headers) or huge (1e12: it buffers until memory runs out), so the server hung. Here every
// header block must carry one Content-Length of at most MAX_MESSAGE_BYTES; anything else ends the
// connection: the bytes after it cannot be framed again.

import { Transform, type TransformCallback } from 'node:stream';

/** The largest message accepted: a 20 MB minified file in a didOpen fits, with room for JSON escapes. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** A header block longer than this is not LSP. */
const MAX_HEADER_BYTES = 8 * 1024;
const HEADER_END = Buffer.from('\r\n\r\n');

export class FramingError extends Error {}

/** Passes stdin through unchanged while it is well framed; emits a FramingError otherwise. */
export class FramingCheck extends Transform {
  /** Bytes of the current message's body still to pass through. */
  private bodyLeft = 0;
  /** Header bytes seen so far (the block is checked once its end arrives). */
  private header = Buffer.alloc(0);

  constructor(private readonly maxMessageBytes = MAX_MESSAGE_BYTES) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let at = 0;
    try {
      while (at < chunk.length) {
        if (this.bodyLeft > 0) {
          const take = Math.min(this.bodyLeft, chunk.length - at);
          this.push(chunk.subarray(at, at + take));
          this.bodyLeft -= take;
          at += take;
          continue;
        }
        const rest = chunk.subarray(at);
        const joined = this.header.length > 0 ? Buffer.concat([this.header, rest]) : rest;
        const end = joined.indexOf(HEADER_END);
        if (end < 0) {
          if (joined.length > MAX_HEADER_BYTES)
            throw new FramingError(
              `a header block of over ${MAX_HEADER_BYTES} bytes without an end (no Content-Length framing)`,
            );
          this.header = Buffer.from(joined);
          break;
        }
        const block = joined.subarray(0, end + HEADER_END.length);
        this.bodyLeft = this.contentLength(block.toString('ascii', 0, end));
        this.push(block);
        at += block.length - this.header.length;
        this.header = Buffer.alloc(0);
      }
      done();
    } catch (error) {
      done(error as Error);
    }
  }

  private contentLength(headers: string): number {
    let length: number | null = null;
    for (const line of headers.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon < 0) throw new FramingError(`a header line without a colon (${JSON.stringify(line.slice(0, 40))})`);
      if (line.slice(0, colon).trim().toLowerCase() !== 'content-length') continue;
      const value = line.slice(colon + 1).trim();
      if (!/^\d{1,16}$/.test(value))
        throw new FramingError(`a Content-Length that is not a byte count (${JSON.stringify(value.slice(0, 40))})`);
      length = Number(value);
    }
    if (length === null) throw new FramingError('a message without a Content-Length header');
    if (length > this.maxMessageBytes)
      throw new FramingError(`a Content-Length of ${length} bytes (at most ${this.maxMessageBytes} are accepted)`);
    return length;
  }
}
