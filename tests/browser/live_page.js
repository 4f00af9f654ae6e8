#!/usr/bin/env node
// sidelb's live page (the admin server's GET /) in headless Chromium, as a
// person would see it, for the end-to-end tests and for the README's picture.
//
//   node tests/browser/live_page.js --url http://127.0.0.1:4191/
//     Prints `loaded`, then `snapshot JSON` whenever what the page shows
//     changed (read every 250 ms): each service and its rows as the DOM has
//     them (data-* attributes and text), how many requests the page made
//     and to which hosts, and any script error or refused request. Runs
//     until SIGTERM or SIGINT, or --for-seconds.
//   ... --screenshot PATH [--width 1100]
//     Waits (up to --for-seconds) until every ready pod shows a share over
//     a full window, then saves a PNG of the whole page and exits.
//
// Every request the page makes is logged; one for any other host than the
// page's own is refused, so the page cannot reach the network unnoticed.
// Chromium is Debian's (`make deps-tools`); SIDELB_CHROMIUM names another.
// Packages: the repository's node_modules/ (`make deps-node`).
'use strict';

const { parseArgs } = require('util');

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (err) {
  console.error(`live_page.js needs playwright-core: run make deps-node (${err.message})`);
  process.exit(1);
}

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    screenshot: { type: 'string' },
    width: { type: 'string', default: '1100' },
    'for-seconds': { type: 'string', default: '120' },
  },
});
if (!args.url) {
  console.error('usage: live_page.js --url http://HOST:PORT/ [--screenshot PATH] [--width PX] [--for-seconds N]');
  process.exit(2);
}
const ORIGIN = new URL(args.url);
const LIMIT_MS = Number(args['for-seconds']) * 1000;
const CHROMIUM = process.env.SIDELB_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// What the page shows, read from the DOM.
function readPage() {
  const text = (e) => (e ? e.textContent.replace(/\s+/g, ' ').trim() : '');
  return {
    title: document.title,
    windowSeconds: Number(text(document.getElementById('window'))),
    status: text(document.getElementById('status')),
    services: [...document.querySelectorAll('section[data-service]')].map((s) => ({
      service: s.dataset.service,
      summary: text(s.querySelector('h2 small')),
      rows: [...s.querySelectorAll('tr[data-endpoint]')].map((r) => ({
        endpoint: r.dataset.endpoint,
        name: r.dataset.name,
        state: r.dataset.state,
        share: r.dataset.share === '' ? null : Number(r.dataset.share),
        rate: r.dataset.rate === '' ? null : Number(r.dataset.rate),
        errors: Number(r.dataset.errors),
        extras: [...r.querySelectorAll('[data-extra]')].map((x) => x.dataset.extra),
        text: text(r),
      })),
    })),
  };
}

async function main() {
  const started = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    await browser.close().catch(() => {});
    process.exit(code);
  };
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));

  const context = await browser.newContext({ viewport: { width: Number(args.width), height: 400 } });
  const requests = [];
  const problems = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.host === ORIGIN.host) return route.continue();
    problems.push(`refused a request to another host: ${url.href}`);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  await page.goto(args.url, { waitUntil: 'load' });

  const seen = async () => ({
    ...(await page.evaluate(readPage)),
    requests: { count: requests.length, hosts: [...new Set(requests.map((u) => new URL(u).host))] },
    problems,
  });
  const pause = () => new Promise((r) => setTimeout(r, 250));

  if (args.screenshot) {
    const shown = (p) => p.windowSeconds >= 5 && p.services.some((s) => s.rows.length > 0 &&
      s.rows.every((r) => r.state !== 'ready' || (r.share !== null && r.share > 0)));
    while (!shown(await seen())) {
      if (Date.now() - started > LIMIT_MS) throw new Error(`no share shown within ${LIMIT_MS} ms`);
      await pause();
    }
    await page.screenshot({ path: args.screenshot, fullPage: true });
    console.log(`saved ${args.screenshot}`);
    return stop(0);
  }

  console.log('loaded');
  let last = '';
  while (Date.now() - started < LIMIT_MS) {
    const now = JSON.stringify(await seen());
    if (now !== last) {
      console.log(`snapshot ${now}`);
      last = now;
    }
    await pause();
  }
  return stop(0);
}

main().catch((err) => {
  console.error(`live_page.js: ${err.stack || err}`);
  process.exit(1);
});
