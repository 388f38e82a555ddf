// GPT-2's byte-level alphabet: each of the 256 byte values is shown as one printable character,
// so byte sequences can live in a JSON vocabulary. Printable Latin-1 bytes map to themselves; the
// other 68 bytes (controls, space, NBSP, soft hyphen) map to U+0100 upwards, in byte order.

function isPrintable(byte: number): boolean {
  return (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
}

/** BYTE_TO_CHAR[b] is the vocabulary character for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const chars: string[] = new Array(256);
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    chars[byte] = String.fromCharCode(isPrintable(byte) ? byte : 256 + shifted++);
  }
  return chars;
})();

/** Char code -> byte, or -1 for characters outside the alphabet. */
const CODE_TO_BYTE: Int16Array = (() => {
  const table = new Int16Array(256 + 68).fill(-1);
  BYTE_TO_CHAR.forEach((char, byte) => {
    table[char.charCodeAt(0)] = byte;
  });
  return table;
})();

/** Bytes of a byte-level token string, or null when it holds a character outside the alphabet. */
export function byteLevelTokenToBytes(token: string): Uint8Array | null {
  const bytes = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const code = token.charCodeAt(i);
    const byte = code < CODE_TO_BYTE.length ? CODE_TO_BYTE[code] : -1;
    if (byte < 0) return null;
    bytes[i] = byte;
  }
  return bytes;
}
