// The operator page in a real browser: Debian's headless Chromium driven by playwright-core.
// Run by tests/browser/test_ops_browser.py, which starts the app and prepares the ledger:
//   OPS_URL, OPS_USERNAME, OPS_PASSWORD        where and who
//   OPS_EMAIL, OPS_DECISIONS                   an address to look up and its decisions, newest
//                                              first, comma-separated (e.g. "withdrawn,granted")
//   OPS_DEAD_LETTER_ID                         an open dead letter to replay
//   OPS_ACCEPTED                               the number of accepted events on the status page
//   OPS_SCREENSHOTS (default a temp dir)       where ops-login.png ... ops-dead-letter.png go
//                                              (`make screenshots` points it at docs/)
//   OPS_ARTIFACTS (default the temp dir)       a screenshot of the page when a step fails
//   CHROMIUM (default /usr/bin/chromium)
// Exits 0 when every step passed.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// Exactly these: the machine runs as root (no sandbox), and on a closed network Chromium's
// background connections are refused, so nothing may try to reach out.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') {
    throw new Error(`${name} must be set`);
  }
  return value;
}

const base = setting('OPS_URL').replace(/\/$/, '');
const username = setting('OPS_USERNAME');
const password = setting('OPS_PASSWORD');
const email = setting('OPS_EMAIL');
const decisions = setting('OPS_DECISIONS').split(',');
const deadLetterId = setting('OPS_DEAD_LETTER_ID');
const accepted = setting('OPS_ACCEPTED');
const shots = setting('OPS_SCREENSHOTS', join(tmpdir(), 'ops-screenshots'));
const artifacts = setting('OPS_ARTIFACTS', tmpdir());
mkdirSync(shots, { recursive: true });

async function step(name, page, run) {
  process.stdout.write(`- ${name} ... `);
  try {
    await run();
    process.stdout.write('ok\n');
  } catch (error) {
    process.stdout.write('FAILED\n');
    const where = join(artifacts, `failed-${name.replaceAll(/\W+/g, '-')}.png`);
    await page.screenshot({ path: where, fullPage: true }).catch(() => {});
    console.error(`step "${name}" failed at ${page.url()} (screenshot: ${where})`);
    throw error;
  }
}

async function signIn(page) {
  await page.goto(`${base}/ops`);
  assert.equal(new URL(page.url()).pathname, '/ops/login', 'an anonymous visit must go to sign-in');
  await page.getByLabel('Username').fill(username);
  await page.screenshot({ path: join(shots, 'ops-login.png') });
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Status' }).waitFor();
}

async function status(page) {
  assert.equal((await page.locator('#count-accepted').innerText()).trim(), accepted);
  await page.getByRole('button', { name: /^Pause / }).first().waitFor();
  await page.screenshot({ path: join(shots, 'ops-status.png'), fullPage: true });
}

async function contact(page) {
  const nav = page.getByRole('navigation', { name: 'Main' });
  await nav.getByRole('link', { name: 'Contacts' }).click();
  await page.getByLabel('E-mail address').fill(email);
  await page.getByRole('button', { name: 'Show history' }).click();
  await page.waitForURL(/\/ops\/contacts\/\d+$/);
  assert.ok(!page.url().includes('@'), 'the address must never be in a URL');
  const listed = page.locator('article.decision h3 .badge');
  assert.deepEqual(await listed.allInnerTexts(), decisions);
  await page.screenshot({ path: join(shots, 'ops-contact.png'), fullPage: true });
}

async function replay(page) {
  const nav = page.getByRole('navigation', { name: 'Main' });
  await nav.getByRole('link', { name: 'Dead letters' }).click();
  await page.getByRole('link', { name: `Dead letter ${deadLetterId}`, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: new RegExp(`Dead letter ${deadLetterId}`) }).waitFor();
  await page.getByRole('button', { name: `Replay dead letter ${deadLetterId}` }).click();
  const flash = page.getByRole('status').filter({ hasText: `Dead letter ${deadLetterId} replayed` });
  await flash.waitFor();
  assert.match(await flash.innerText(), /latest decision is pending again/);
  await page.screenshot({ path: join(shots, 'ops-dead-letter.png'), fullPage: true });
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('status').filter({ hasText: 'You are signed out.' }).waitFor();
  await page.goto(`${base}/ops`);
  assert.equal(new URL(page.url()).pathname, '/ops/login');
}

const userDataDir = mkdtempSync(join(tmpdir(), 'ops-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: setting('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 860 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  await step('sign in', page, () => signIn(page));
  await step('status page', page, () => status(page));
  await step('contact history', page, () => contact(page));
  await step('replay a dead letter', page, () => replay(page));
  await step('sign out', page, () => signOut(page));
  console.log('all steps passed');
} finally {
  await context?.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
