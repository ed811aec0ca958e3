'use strict';
/**
 * Drives VS Code (code-server) in headless Chromium: opens a Python file, types at its end,
 * waits for flashls's ghost text, takes a screenshot, accepts with Tab, saves, and checks
 * that the file on disk gained exactly the typed text plus the suggestion.
 * Configured by E2E_* variables; run by e2e/run.sh.
 */

const fs = require('fs');
const path = require('path');
const { chromium } = require(process.env.E2E_PLAYWRIGHT || 'playwright-core');

const env = process.env;
const url = env.E2E_URL;
const file = env.E2E_FILE;
const typed = env.E2E_TYPE || 'fib';
const screenshot = env.E2E_SCREENSHOT;
const suggestionTimeoutMs = Number(env.E2E_SUGGESTION_TIMEOUT_MS || 60000);
const GHOST = '.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text';

async function waitForFile(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = fs.readFileSync(file, 'utf8');
    if (predicate(text)) {
      return text;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${file} did not change as expected within ${timeoutMs} ms`);
}

/** Saves with Ctrl+S until the file on disk satisfies `predicate` (saves can lag edits). */
async function save(page, predicate) {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    await page.keyboard.press('Control+S');
    try {
      return await waitForFile(predicate, 3000);
    } catch (error) {
      if (attempt === 4) {
        throw error;
      }
    }
  }
  return undefined;
}

async function openFile(page) {
  await page.waitForSelector('.monaco-workbench .part.editor', { timeout: 120000 });
  // The extension host and the workbench settle a moment after the first paint.
  await page.waitForTimeout(3000);
  await page.keyboard.press('Control+P');
  const input = await page.waitForSelector('.quick-input-widget input', { timeout: 30000 });
  await input.type(path.basename(file));
  await page.waitForSelector('.quick-input-list .monaco-list-row', { timeout: 30000 });
  await page.keyboard.press('Enter');
  await page.waitForSelector('.monaco-editor.focused .view-lines', { timeout: 30000 });
}

/** Puts the cursor at the end of the file, checking the status bar's "Ln, Col". */
async function goToEnd(page, lastLine) {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    await page.keyboard.press('Control+End');
    await page.waitForTimeout(250);
    const position = await page.$$eval('.statusbar-item', (elements) =>
      elements.map((element) => element.textContent).find((text) => /Ln \d+/.test(text)) || '');
    if (position.includes(`Ln ${lastLine},`)) {
      return;
    }
    await page.click('.monaco-editor .view-lines');
  }
  throw new Error('could not put the cursor at the end of the file');
}

/** Waits for the flashls status bar item to show its "ready" icon (server up, model loaded). */
async function waitForServer(page, timeoutMs) {
  await page.waitForFunction(() => [...document.querySelectorAll('.statusbar-item')].some(
    (item) => /flashls/.test(item.textContent) && item.querySelector('.codicon-sparkle')),
  null, { timeout: timeoutMs, polling: 200 });
}

/** The suggestion as drawn: spans after the cursor, then any lines shown below it. */
async function ghostText(page) {
  const text = await page.evaluate(() => {
    const inline = [...document.querySelectorAll('.monaco-editor .ghost-text-decoration')]
      .map((span) => span.textContent).join('');
    const below = [...document.querySelectorAll('.monaco-editor .ghost-text .view-line')]
      .map((line) => line.textContent);
    return [inline, ...below].join('\n');
  });
  return text.replace(/\u00a0/g, ' ');
}

/** Runs "flashls: Toggle Suggestions" from the command palette; the status bar says off. */
async function toggleSuggestionsOff(page) {
  await page.keyboard.press('F1');
  const input = await page.waitForSelector('.quick-input-widget input', { timeout: 30000 });
  await input.type('flashls: Toggle Suggestions');
  await page.waitForSelector('.quick-input-list .monaco-list-row', { timeout: 30000 });
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('.statusbar-item')].some(
    (item) => /flashls/.test(item.textContent) && item.querySelector('.codicon-circle-slash')),
  null, { timeout: 15000, polling: 200 });
}

async function statusBarText(page) {
  const items = await page.$$eval('.statusbar-item', (elements) =>
    elements.map((element) => element.textContent.trim()).filter((text) => /flashls/.test(text)));
  return items.join(' | ');
}

async function main() {
  const before = fs.readFileSync(file, 'utf8');
  const browser = await chromium.launch({
    executablePath: env.E2E_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const report = { typed };
  const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
  try {
    await page.goto(url);
    await openFile(page);
    await waitForServer(page, suggestionTimeoutMs);
    await goToEnd(page, before.split('\n').length);
    const started = Date.now();
    await page.keyboard.type(typed, { delay: 80 });
    const lastKey = Date.now();
    await page.waitForSelector(GHOST, { timeout: suggestionTimeoutMs });
    report.suggestion_ms = Date.now() - started;
    report.after_last_key_ms = Date.now() - lastKey;
    // Let the status bar pick up the latency before the picture.
    await page.waitForTimeout(700);
    report.ghost_text = await ghostText(page);
    report.status_bar = await statusBarText(page);
    if (screenshot) {
      await page.screenshot({ path: screenshot });
    }
    await page.keyboard.press('Tab');
    await page.waitForSelector(GHOST, { state: 'detached', timeout: 10000 });
    const after = await save(page, (text) => text.startsWith(before + typed)
      && text.length > before.length + typed.length);
    report.inserted = after.slice(before.length);
    if (!after.startsWith(before) || !report.inserted.startsWith(typed)) {
      throw new Error(`unexpected file after Tab: ${JSON.stringify(after.slice(-200))}`);
    }
    report.accepted = report.inserted.slice(typed.length);
    if (!report.accepted.trim()) {
      throw new Error('Tab accepted an empty suggestion');
    }
    if (!report.accepted.startsWith(report.ghost_text.split('\n')[0])) {
      throw new Error('what Tab inserted is not what the ghost text showed');
    }
    await toggleSuggestionsOff(page);
    report.ok = true;
  } catch (error) {
    report.ok = false;
    report.error = String(error && error.stack || error);
    report.status_bar = await statusBarText(page).catch(() => undefined);
    if (env.E2E_FAILURE_SCREENSHOT) {
      await page.screenshot({ path: env.E2E_FAILURE_SCREENSHOT }).catch(() => undefined);
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.ok ? 0 : 1);
}

main();
