// A voter clicks a button on the vote page while the results page is open
// in another tab; the new vote must appear on the results page without a
// reload (server-sent events), and over 20 s of live updates the results
// page is loaded exactly once. When the stream stalls (the results node is
// stopped with SIGSTOP, RESULTS_PID) the page says so, and recovers when
// it resumes. The vote follows POST/redirect/GET: its answer is a 303 to
// the page, and reloading that page sends no vote. A change at once (the
// test's cluster runs with a long MIN_CHANGE_INTERVAL_MS) gets the styled
// 429 page, whose script (/retry.js) says it will send the vote again.
// axe-core checks both pages (fresh, after voting, after a 429; live,
// stale). The pages' Content-Security-Policy must let their own style and
// script work, and the browser must refuse to show the vote page inside a
// frame (clickjacking). Screenshots of both pages, also in forced-colours
// mode, go to OUT_DIR.
//
//   node vote-and-watch.mjs VOTE_URL RESULTS_URL OUT_DIR RESULTS_PID
//
// Exit status 0 on success; a one-line reason on stderr otherwise.
import { checkAccessibility } from "./axe.mjs";
import { launchChromium } from "./chromium.mjs";

const [voteUrl, resultsUrl, outDir, resultsPidText] = process.argv.slice(2);
const resultsPid = parseInt(resultsPidText, 10);
if (!voteUrl || !resultsUrl || !outDir || !(resultsPid > 0)) {
  console.error("usage: node vote-and-watch.mjs VOTE_URL RESULTS_URL OUT_DIR RESULTS_PID");
  process.exit(2);
}
const LIVE_WINDOW_MS = 20000;
let stopped = false;

const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 420, height: 860 }, deviceScaleFactor: 1 });
  const results = await context.newPage();
  // Every load of the page itself, whatever starts it (a refresh, a script).
  let loads = 0;
  results.on("request", (r) => {
    if (r.resourceType() === "document" && r.frame() === results.mainFrame()) loads += 1;
  });
  await results.goto(resultsUrl + "/");
  const loadedAt = Date.now();
  await results.waitForFunction(() => document.getElementById("live").textContent === "updates live", null, {
    timeout: 10000,
  });
  // Counts the tallies the page has shown (each one changes the time).
  await results.evaluate(() => {
    window.updates = 0;
    new MutationObserver(() => (window.updates += 1)).observe(document.getElementById("asof"), {
      attributes: true,
      attributeFilter: ["datetime"],
    });
  });
  await checkAccessibility(results, "the results page, live");
  // "1,234 · 56.7%" -> 1234
  const optionCount = async () =>
    parseInt((await results.locator("#opt-c .count").textContent()).split("·")[0].replace(/\D/g, ""), 10);
  const before = await optionCount();
  const rows = await results.locator("div.row[id^=opt-]").count();
  if (rows !== 3) throw new Error(`the results page shows ${rows} options, not the poll's 3`);
  const rateBefore = await results.locator("#rate-max").textContent();
  if (rateBefore !== "0") throw new Error(`the chart shows votes before any was cast (${rateBefore})`);
  let navigations = 0;
  results.on("framenavigated", (f) => {
    if (f === results.mainFrame()) navigations += 1;
  });

  const vote = await context.newPage();
  await vote.goto(voteUrl + "/");
  const choices = await vote.locator("button[name=vote]").count();
  if (choices !== 3) throw new Error(`the vote page offers ${choices} buttons, not the poll's 3`);
  await vote.screenshot({ path: `${outDir}/vote-page.png` });
  // The stylesheet is allowed by its hash: a wrong hash leaves the
  // buttons unstyled.
  const bg = await vote.locator("button[value=a]").evaluate((b) => getComputedStyle(b).backgroundColor);
  if (bg !== "rgb(31, 106, 165)") throw new Error(`the vote page's style was blocked (button background ${bg})`);
  await checkAccessibility(vote, "the vote page, fresh");
  // Every vote this page sends, and what each was answered.
  const posts = [];
  vote.on("response", (r) => {
    if (r.request().method() === "POST") posts.push(r.status());
  });
  await vote.locator("button[value=c]").click();
  await vote.waitForSelector("button.c.chosen", { timeout: 10000 });
  const thanks = await vote.locator("[role=status]").textContent();
  if (!/Thanks/.test(thanks)) throw new Error(`no confirmation after the click: ${thanks}`);
  if (posts.join() !== "303") throw new Error(`the vote was answered ${posts.join()}, not one 303`);
  if (new URL(vote.url()).pathname !== "/") throw new Error(`the vote landed on ${vote.url()}`);
  await checkAccessibility(vote, "the vote page, after voting");
  // Focus on the other button must not look like the choice.
  await vote.locator("button[value=b]").focus();
  const look = (sel) =>
    vote.locator(sel).evaluate((b) => {
      const c = getComputedStyle(b);
      return `${c.outlineStyle} ${c.boxShadow} ${c.borderColor}`;
    });
  const [chosenLook, focusedLook] = [await look("button[value=c]"), await look("button[value=b]")];
  if (chosenLook === focusedLook) throw new Error(`the focused button looks chosen: ${focusedLook}`);
  // A reload repeats the GET the redirect led to: the choice, no vote sent,
  // and the thanks only once.
  await vote.reload();
  await vote.waitForSelector("button.c.chosen", { timeout: 10000 });
  if (posts.length !== 1) throw new Error(`reloading the page sent ${posts.length - 1} more vote(s)`);
  if (/Thanks/.test(await vote.locator("main").textContent())) throw new Error("the thanks showed again on reload");
  console.log("ok: the vote was answered 303, and reloading the page it landed on sent nothing");

  // A change at once: the "too soon" page, styled, with its retry.
  await vote.locator("button[value=b]").click();
  await vote.waitForSelector("h1", { timeout: 10000 });
  await vote.waitForSelector("#retry:not([hidden])", { timeout: 10000 });
  if (posts.join() !== "303,429") throw new Error(`the change was answered ${posts.join()}`);
  const lang = await vote.locator("html").getAttribute("lang");
  const back = await vote.locator('a[href="/"]').count();
  if (lang !== "en" || back !== 1) throw new Error(`the 429 page: lang ${lang}, ${back} link(s) back`);
  await checkAccessibility(vote, "the vote page, after a 429");
  await vote.screenshot({ path: `${outDir}/vote-page-429.png` });
  // Away before its script sends the vote again (it would, after
  // Retry-After): the rest of the test counts option c.
  await vote.goto(voteUrl + "/");
  await vote.waitForSelector("button.c.chosen", { timeout: 10000 });

  // The results page must show it by itself: poll its DOM, never reload.
  await results.waitForFunction(
    (b) => {
      const t = document.querySelector("#opt-c .count").textContent;
      return parseInt(t.split("·")[0].replace(/\D/g, ""), 10) > b;
    },
    before,
    { timeout: 30000 },
  );
  await results.waitForSelector("#state.final", { timeout: 30000 });
  if (navigations !== 0) throw new Error("the results page reloaded instead of updating live");
  // The bars grow over their CSS transition (0.6 s): a picture taken before
  // it ends shows a 100% bar short of its track's end.
  await results.waitForFunction(
    () => {
      const bar = document.querySelector("#opt-c .bar");
      const want = (parseFloat(document.querySelector("#opt-c .p").textContent) / 100) * bar.parentElement.clientWidth;
      return document.getAnimations().length === 0 && Math.abs(bar.getBoundingClientRect().width - want) < 1;
    },
    null,
    { timeout: 10000 },
  );
  await results.screenshot({ path: `${outDir}/results-page.png` });
  console.log(`ok: option c went from ${before} to ${await optionCount()} without a reload`);
  // The votes-per-second chart draws it too, through the same stream: its
  // scale leaves 0 once a second of the hour holds a counted vote.
  await results.waitForFunction(() => document.getElementById("rate-max").textContent !== "0", null, {
    timeout: 30000,
  });
  console.log(`ok: the chart moved (votes a second up to ${await results.locator("#rate-max").textContent()})`);

  // The whole window, measured from the load: one load, many updates.
  await results.waitForTimeout(Math.max(0, loadedAt + LIVE_WINDOW_MS - Date.now()));
  const updates = await results.evaluate(() => window.updates);
  if (loads !== 1 || navigations !== 0) {
    throw new Error(`the results page was loaded ${loads} times in ${LIVE_WINDOW_MS / 1000} s (${navigations} navigations)`);
  }
  if (updates < 5) throw new Error(`only ${updates} live updates in ${LIVE_WINDOW_MS / 1000} s`);
  console.log(`ok: the results page was loaded once in ${LIVE_WINDOW_MS / 1000} s and updated live ${updates} times`);

  // The stream stalls: the page must stop claiming to be live.
  process.kill(resultsPid, "SIGSTOP");
  stopped = true;
  await results.waitForSelector("#live.stale", { timeout: 15000 });
  await checkAccessibility(results, "the results page, stale");
  await results.screenshot({ path: `${outDir}/results-page-stale.png` });
  process.kill(resultsPid, "SIGCONT");
  stopped = false;
  await results.waitForFunction(() => document.getElementById("live").textContent === "updates live", null, {
    timeout: 60000,
  });
  console.log("ok: a stalled stream showed as paused, and live again once it resumed");

  // Forced colours (Windows high contrast): the buttons keep outlines and
  // the bars stay visible.
  for (const p of [vote, results]) await p.emulateMedia({ forcedColors: "active" });
  await vote.screenshot({ path: `${outDir}/vote-page-forced-colors.png` });
  await results.screenshot({ path: `${outDir}/results-page-forced-colors.png` });
  const border = await vote.locator("button[value=b]").evaluate((b) => getComputedStyle(b).borderTopStyle);
  const bar = await results.locator("#opt-c .bar").evaluate((b) => getComputedStyle(b).backgroundColor);
  if (border !== "solid") throw new Error(`in forced colours the vote buttons have no border (${border})`);
  if (bar === "rgba(0, 0, 0, 0)") throw new Error("in forced colours the result bars disappear");
  console.log(`ok: forced colours keep the buttons' borders and the bars (${bar})`);

  // Another site frames the vote page: the browser must not render it.
  const framer = await context.newPage();
  await framer.setContent(`<iframe id="f" src="${voteUrl}/" onload="window.framed=true"></iframe>`);
  await framer.waitForFunction(() => window.framed === true, null, { timeout: 10000 });
  const child = framer.frames().find((f) => f !== framer.mainFrame());
  let buttons = 0;
  try {
    buttons = await child.locator("button").count();
  } catch (e) {
    buttons = 0; // the error page the browser shows instead has no DOM for us
  }
  if (buttons !== 0) throw new Error(`the vote page rendered inside a frame (${buttons} buttons, ${child.url()})`);
  console.log(`ok: the framed vote page was refused (${child.url()})`);
} catch (e) {
  console.error(`browser test failed: ${e.message.split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  if (stopped) process.kill(resultsPid, "SIGCONT");
  await browser.close();
}
