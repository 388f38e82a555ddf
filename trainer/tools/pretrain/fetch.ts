// Fetches the pinned npm packages with `npm pack` (the npm registry, npm's own integrity check)
// into a cache folder, extracts them with tar and refuses any package whose package.json license
// is not permissive.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type NpmSource, isPermissiveLicense } from './sources';

export interface FetchedPackage {
  source: NpmSource;
  /** The extracted package root (the tarball's package/ folder). */
  dir: string;
  license: string;
  integrity: string;
}

interface FetchMarker {
  name: string;
  version: string;
  integrity: string;
  license: string;
}

const MARKER = '.idiom-fetched.json';

function packageDirName(source: NpmSource): string {
  return `${source.name.replace(/^@/, '').replace(/\//g, '__')}@${source.version}`;
}

function licenseText(license: unknown): string {
  if (license && typeof license === 'object') return String((license as { type?: unknown }).type);
  return String(license);
}

/** Fetches (or reuses from `cacheDir`) one package; throws a one-line error on any mismatch. */
export function fetchNpmPackage(
  source: NpmSource,
  cacheDir: string,
  log: (line: string) => void = () => {},
): FetchedPackage {
  const spec = `${source.name}@${source.version}`;
  const root = path.join(cacheDir, 'npm', packageDirName(source));
  const markerFile = path.join(root, MARKER);
  if (fs.existsSync(markerFile)) {
    const marker = JSON.parse(fs.readFileSync(markerFile, 'utf8')) as FetchMarker;
    if (source.integrity && marker.integrity !== source.integrity) {
      throw new Error(
        `${spec}: cached tarball integrity ${marker.integrity} differs from the pinned ${source.integrity}`,
      );
    }
    return { source, dir: path.join(root, 'package'), license: marker.license, integrity: marker.integrity };
  }
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  log(`fetch ${spec}`);
  let packed: { filename: string; integrity: string; name: string; version: string }[];
  try {
    const out = execFileSync('npm', ['pack', spec, '--json', '--pack-destination', root], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 256 * 1024 * 1024,
    });
    packed = JSON.parse(out);
  } catch (error) {
    throw new Error(
      `${spec}: npm pack failed (${
        String((error as { stderr?: string }).stderr ?? (error as Error).message)
          .trim()
          .split('\n')[0]
      })`,
    );
  }
  const info = packed[0];
  if (!info || info.name !== source.name || info.version !== source.version) {
    throw new Error(`${spec}: npm pack returned ${info ? `${info.name}@${info.version}` : 'nothing'}`);
  }
  if (source.integrity && info.integrity !== source.integrity) {
    throw new Error(`${spec}: tarball integrity ${info.integrity} differs from the pinned ${source.integrity}`);
  }
  const tarball = path.join(root, path.basename(info.filename));
  try {
    // --no-same-owner: files belong to whoever runs this; tarballs always hold package/... paths.
    execFileSync('tar', ['-xzf', tarball, '-C', root, '--no-same-owner'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    throw new Error(`${spec}: cannot extract ${path.basename(tarball)} (${(error as Error).message.split('\n')[0]})`);
  }
  fs.rmSync(tarball);
  const manifestFile = path.join(root, 'package', 'package.json');
  let manifest: { license?: unknown; licenses?: unknown; name?: unknown; version?: unknown };
  try {
    manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
  } catch {
    throw new Error(`${spec}: the tarball has no readable package/package.json`);
  }
  const license = manifest.license ?? (Array.isArray(manifest.licenses) ? manifest.licenses[0] : undefined);
  if (!isPermissiveLicense(license)) {
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(
      `${spec}: license ${JSON.stringify(license ?? null)} is not permissive (allowed: MIT, Apache-2.0, BSD-2/3-Clause, ISC); refusing it`,
    );
  }
  const marker: FetchMarker = {
    name: source.name,
    version: source.version,
    integrity: info.integrity,
    license: licenseText(license),
  };
  fs.writeFileSync(markerFile, JSON.stringify(marker, null, 2));
  return { source, dir: path.join(root, 'package'), license: marker.license, integrity: info.integrity };
}

/** Files under `dir` as '/'-separated relative paths, sorted (symbolic links are skipped). */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile()) out.push(child);
    }
  };
  walk('');
  return out.sort();
}
