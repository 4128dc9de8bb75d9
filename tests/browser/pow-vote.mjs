// With a proof of work asked of new voters (POW_BITS), a click on the vote
// page solves it in the page's script (/pow.js, allowed by the page's
// Content-Security-Policy) and votes; with JavaScript off the same click
// still votes, without a solution (the fallback).
//
//   node pow-vote.mjs VOTE_URL
//
// Exit status 0 on success; a one-line reason on stderr otherwise.
import { launchChromium } from "./chromium.mjs";

const [voteUrl] = process.argv.slice(2);
if (!voteUrl) {
  console.error("usage: node pow-vote.mjs VOTE_URL");
  process.exit(2);
}

const browser = await launchChromium();
try {
  for (const javaScriptEnabled of [true, false]) {
    const context = await browser.newContext({ javaScriptEnabled });
    const page = await context.newPage();
    const errors = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    let posted = null;
    page.on("request", (r) => {
      if (r.method() === "POST") posted = r.url();
    });
    await page.goto(voteUrl + "/");
    const bits = await page.locator("form").getAttribute("data-pow-bits");
    if (!bits) throw new Error("the vote page names no proof of work");
    await page.locator("button[value=b]").click();
    await page.waitForSelector("button.b.chosen", { timeout: 60000 });
    const solved = /[?&]pow=/.test(posted || "");
    if (solved !== javaScriptEnabled) {
      throw new Error(`javascript ${javaScriptEnabled}: posted to ${posted}`);
    }
    if (errors.length) throw new Error(`console errors: ${errors.join(" | ")}`);
    console.log(`ok: javascript ${javaScriptEnabled ? "on" : "off"}: voted, posted to ${new URL(posted).pathname}${solved ? " with a solution" : " without one"}`);
    await context.close();
  }
} catch (e) {
  console.error(`browser test failed: ${e.message.split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
