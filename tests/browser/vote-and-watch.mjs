// A voter clicks a button on the vote page while the results page is open
// in another tab; the new vote must appear on the results page without a
// reload (server-sent events). The pages' Content-Security-Policy must let
// their own style and script work, and the browser must refuse to show the
// vote page inside a frame (clickjacking). Screenshots of both pages go to
// OUT_DIR.
//
//   node vote-and-watch.mjs VOTE_URL RESULTS_URL OUT_DIR
//
// Exit status 0 on success; a one-line reason on stderr otherwise.
import { launchChromium } from "./chromium.mjs";

const [voteUrl, resultsUrl, outDir] = process.argv.slice(2);
if (!voteUrl || !resultsUrl || !outDir) {
  console.error("usage: node vote-and-watch.mjs VOTE_URL RESULTS_URL OUT_DIR");
  process.exit(2);
}

const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 420, height: 860 }, deviceScaleFactor: 1 });
  const results = await context.newPage();
  await results.goto(resultsUrl + "/");
  // "1,234 · 56.7%" -> 1234
  const optionCount = async () =>
    parseInt((await results.locator("#opt-a .count").textContent()).split("·")[0].replace(/\D/g, ""), 10);
  const before = await optionCount();
  let navigations = 0;
  results.on("framenavigated", (f) => {
    if (f === results.mainFrame()) navigations += 1;
  });

  const vote = await context.newPage();
  await vote.goto(voteUrl + "/");
  await vote.screenshot({ path: `${outDir}/vote-page.png` });
  // The stylesheet is allowed by its hash: a wrong hash leaves the
  // buttons unstyled.
  const bg = await vote.locator("button[value=a]").evaluate((b) => getComputedStyle(b).backgroundColor);
  if (bg !== "rgb(47, 127, 193)") throw new Error(`the vote page's style was blocked (button background ${bg})`);
  await vote.locator("button[value=a]").click();
  await vote.waitForSelector("button.a.chosen", { timeout: 10000 });
  const thanks = await vote.locator("[role=status]").textContent();
  if (!/Thanks/.test(thanks)) throw new Error(`no confirmation after the click: ${thanks}`);

  // The results page must show it by itself: poll its DOM, never reload.
  await results.waitForFunction(
    (b) => {
      const t = document.querySelector("#opt-a .count").textContent;
      return parseInt(t.split("·")[0].replace(/\D/g, ""), 10) > b;
    },
    before,
    { timeout: 30000 },
  );
  await results.waitForSelector("#state.final", { timeout: 30000 });
  if (navigations !== 0) throw new Error("the results page reloaded instead of updating live");
  await results.screenshot({ path: `${outDir}/results-page.png` });
  console.log(`ok: option a went from ${before} to ${await optionCount()} without a reload`);

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
  await browser.close();
}
