// axe-core (pinned in package.json) run inside the test's own Chromium on
// the page as it is: WCAG 2.x A and AA rules. The script goes in through
// the DevTools protocol (page.evaluate), which the page's
// Content-Security-Policy does not govern: the policy under test stays on.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const source = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

// Throws on any serious or critical violation, naming rule and elements;
// returns how many minor or moderate ones there were.
export async function checkAccessibility(page, what) {
  await page.evaluate(source);
  const result = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }), TAGS);
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) {
    const list = bad.map((v) => `${v.id} (${v.impact}) at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    throw new Error(`accessibility, ${what}: ${list.join("; ")}`);
  }
  console.log(`ok: axe found no serious or critical violation on ${what} (${result.violations.length} minor)`);
  return result.violations.length;
}
