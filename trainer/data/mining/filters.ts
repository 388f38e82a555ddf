// File filters: every exclusion has a reason that the mining summary counts.
// Path checks run before a blob is read (cheap, and a vendored or key file is never even loaded);
// content checks run on the bytes.

import { fileExtension } from './languages';

export type ExclusionReason =
  | 'symlink'
  | 'submodule'
  | 'secret-file'
  | 'vendored'
  | 'lockfile'
  | 'gitignored'
  | 'idiomignore'
  | 'policy'
  | 'binary'
  | 'too-large'
  | 'unsupported-language'
  | 'invalid-utf8'
  | 'empty'
  | 'secret'
  | 'minified'
  | 'generated'
  | 'duplicate'
  | 'near-duplicate';

export interface FilterOptions {
  maxFileBytes: number;
  maxLineLength: number;
  maxMeanLineLength: number;
  minAlphanumericShare: number;
  maxDigitShare: number;
}

// Tabby's thresholds (mean line > 150, alphanumeric share < 0.25, digit share > 0.5), except the
// longest line: Tabby drops any file with a line over 300 characters; one long string literal
// should not drop a hand-written file, so Idiom drops at 1000 (minified code runs to many KB).
export const DEFAULT_FILTER_OPTIONS: FilterOptions = {
  maxFileBytes: 1_000_000,
  maxLineLength: 1000,
  maxMeanLineLength: 150,
  minAlphanumericShare: 0.25,
  maxDigitShare: 0.5,
};

const VENDORED_DIRS = new Set([
  'node_modules',
  'bower_components',
  'jspm_packages',
  'vendor',
  'vendors',
  'third_party',
  'third-party',
  'thirdparty',
  '3rdparty',
  'dist',
  '.yarn',
  '.pnpm-store',
  '__pycache__',
  '.venv',
  'venv',
  'site-packages',
  'Pods',
  'Carthage',
  '.git',
]);

const LOCK_FILES = new Set([
  'package-lock.json',
  'npm-shrinkwrap.json',
  'yarn.lock',
  'pnpm-lock.yaml',
  'bun.lockb',
  'bun.lock',
  'cargo.lock',
  'poetry.lock',
  'pipfile.lock',
  'pdm.lock',
  'uv.lock',
  'gemfile.lock',
  'composer.lock',
  'go.sum',
  'flake.lock',
  'packages.lock.json',
  'podfile.lock',
  'mix.lock',
  'pubspec.lock',
]);

// File names that hold credentials whatever their content.
const SECRET_NAMES = new Set([
  'id_rsa',
  'id_dsa',
  'id_ecdsa',
  'id_ed25519',
  '.npmrc',
  '.pypirc',
  '.netrc',
  '_netrc',
  '.git-credentials',
  '.htpasswd',
  '.pgpass',
  'credentials',
  'credentials.json',
  'credentials.yml',
  'credentials.yaml',
  'secrets.json',
  'secrets.yml',
  'secrets.yaml',
  'secrets.toml',
  '.dockercfg',
  'known_hosts',
  'authorized_keys',
]);
const SECRET_EXTENSIONS = new Set([
  '.pem',
  '.key',
  '.p12',
  '.pfx',
  '.jks',
  '.keystore',
  '.ppk',
  '.kdbx',
  '.crt',
  '.cer',
  '.der',
  '.csr',
  '.p8',
  '.gpg',
  '.asc',
  '.tfstate',
  '.tfvars',
]);

const BINARY_EXTENSIONS = new Set(
  (
    '.png .jpg .jpeg .gif .bmp .ico .icns .webp .tif .tiff .psd .pdf .zip .gz .tgz .bz2 .xz .zst .7z .rar .tar .jar ' +
    '.war .class .o .a .so .dylib .dll .exe .bin .obj .lib .pyc .pyo .wasm .woff .woff2 .ttf .otf .eot .mp3 .mp4 .wav ' +
    '.ogg .flac .mov .avi .mkv .webm .sqlite .db .onnx .safetensors .pt .pth .ckpt .npy .npz .pkl .h5 .parquet'
  ).split(' '),
);

// Names of generated files (protobuf, minified bundles, designer files).
const GENERATED_NAME =
  /(\.min\.(js|css|mjs)|\.pb\.go|_pb2(_grpc)?\.pyi?|\.pb\.(cc|h)|\.generated\.\w+|\.g\.cs|\.designer\.cs|\.bundle\.js|\.js\.map|\.d\.ts\.map)$/i;

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

// A reason to exclude a file from its path alone, or undefined.
export function exclusionByPath(path: string): ExclusionReason | undefined {
  const name = baseName(path);
  const lower = name.toLowerCase();
  const extension = fileExtension(path);
  if (lower === '.env' || lower.startsWith('.env.') || lower.endsWith('.env')) return 'secret-file';
  if (SECRET_NAMES.has(lower) || SECRET_EXTENSIONS.has(extension) || /^id_(rsa|dsa|ecdsa|ed25519)/.test(lower))
    return 'secret-file';
  if (/^(service[-_]?account|gcp[-_]?key|google[-_]?credentials).*\.json$/.test(lower)) return 'secret-file';
  const dirs = path.split('/');
  dirs.pop();
  if (dirs.some((dir) => VENDORED_DIRS.has(dir))) return 'vendored';
  if (LOCK_FILES.has(lower) || extension === '.lock') return 'lockfile';
  if (BINARY_EXTENSIONS.has(extension)) return 'binary';
  if (GENERATED_NAME.test(name)) return 'generated';
  return undefined;
}

// Git's heuristic: a NUL byte in the first 8000 bytes means binary.
export function looksBinary(bytes: Uint8Array): boolean {
  const end = Math.min(bytes.length, 8000);
  for (let i = 0; i < end; i++) if (bytes[i] === 0) return true;
  return false;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

// UTF-8 text with line endings normalised to \n (and a BOM dropped), or undefined if invalid.
export function decodeSource(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return undefined;
  }
  return text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
}

const GENERATED_MARKER =
  /@generated\b|\bDO NOT EDIT\b|\bauto-?generated\b|automatically generated|<auto-generated|generated by (protoc|the protocol buffer compiler|swagger|openapi|thrift|cython|bindgen)/i;

// Minified or generated text: long lines, little alphanumeric text, mostly digits, or a marker
// near the top of the file.
export function exclusionByContent(text: string, options: FilterOptions): ExclusionReason | undefined {
  const head = text.slice(0, 1024);
  if (GENERATED_MARKER.test(head)) return 'generated';
  let lines = 1;
  let lineStart = 0;
  let longest = 0;
  let alphanumeric = 0;
  let digits = 0;
  let nonSpace = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) {
      longest = Math.max(longest, i - lineStart);
      lineStart = i + 1;
      lines++;
      continue;
    }
    if (c === 32 || c === 9) continue;
    nonSpace++;
    if (c >= 48 && c <= 57) {
      digits++;
      alphanumeric++;
    } else if ((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c > 127) alphanumeric++;
  }
  longest = Math.max(longest, text.length - lineStart);
  if (text.endsWith('\n')) lines--;
  if (longest > options.maxLineLength) return 'minified';
  if (text.length / Math.max(lines, 1) > options.maxMeanLineLength) return 'minified';
  if (nonSpace > 0 && alphanumeric / nonSpace < options.minAlphanumericShare) return 'minified';
  if (nonSpace > 0 && digits / nonSpace > options.maxDigitShare) return 'generated';
  return undefined;
}
