// The console in a real browser: Debian's Chromium driven by Playwright (playwright-core,
// which downloads no browser). Run by tests/console.rs against a live `rapport serve`;
// every step asserts what a person at the console relies on, and each page is kept as a
// screenshot in $SHOTS.
//
//   RAPPORT_URL=http://127.0.0.1:PORT RAPPORT_TOKEN=... SHOTS=dir node console.test.mjs
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const url = process.env.RAPPORT_URL;
const token = process.env.RAPPORT_TOKEN;
const shots = process.env.SHOTS;
const handoffContact = process.env.HANDOFF_CONTACT;
const draftContact = process.env.DRAFT_CONTACT;
const flow = process.env.ROLLOUT_FLOW;
const editContact = process.env.EDIT_CONTACT;
const rejectContact = process.env.REJECT_CONTACT;
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
for (const [k, v] of Object.entries({ url, token, shots, handoffContact, draftContact, flow, editContact, rejectContact })) {
  assert.ok(v, `${k} is not set`);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: browserPath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let step = "start";
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // Clicks, then waits for the page after it to say what happened (htmx swaps the page
  // in place: the flash of the page before may still be there for a moment).
  const clickThenFlash = async (locator, expected) => {
    await locator.click();
    await page.locator(".flash", { hasText: expected }).waitFor({ timeout: 10000 });
  };
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  step = "a page asks for sign-in first";
  await page.goto(`${url}/console/flows`);
  assert.match(page.url(), /\/console\/login\?next=/);
  await shot("login");

  step = "a wrong token is refused";
  await page.fill("#name", "Test Operator");
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  await page.waitForSelector(".error");
  assert.match(await page.textContent(".error"), /not the host's API token/);

  step = "sign in, and land on the page asked for";
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(/\/console\/flows$/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "rapport_session");
  assert.ok(session, "a session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");

  step = "overview: KPI tiles and charts";
  await page.click("text=Overview");
  await page.waitForURL(/\/console\/overview/);
  const runs = Number(await page.textContent("[data-kpi=runs] .value"));
  assert.ok(runs > 0, `conversations started: ${runs}`);
  assert.ok((await page.locator("svg.chart").count()) >= 4, "four charts");
  assert.ok(await page.locator("svg.chart").first().isVisible());
  assert.ok((await page.locator("svg.chart circle").count()) >= 3, "points on the charts");
  await shot("overview");

  step = "flows: halt a rollout and see it halted";
  await page.goto(`${url}/console/flows`);
  const card = page.locator(`section[data-flow="${flow}"]`);
  assert.equal(await card.locator("[data-state]").getAttribute("data-state"), "running");
  await clickThenFlash(card.locator("button", { hasText: "Halt" }), new RegExp(`Halted ${flow}`));
  assert.equal(await page.locator(`section[data-flow="${flow}"] [data-state]`).getAttribute("data-state"), "halted");
  await shot("flows-halted");

  step = "flows: resume it";
  await clickThenFlash(page.locator(`section[data-flow="${flow}"] button`, { hasText: "Resume" }), new RegExp(`Resumed ${flow}`));
  assert.equal(await page.locator(`section[data-flow="${flow}"] [data-state]`).getAttribute("data-state"), "running");
  await shot("flows");

  step = "handoffs: the open one is listed and released";
  await page.goto(`${url}/console/handoffs`);
  const row = page.locator(`tr[data-contact="${handoffContact}"]`);
  assert.equal(await row.count(), 1, "the open handoff is listed");
  await shot("handoffs");
  await clickThenFlash(row.locator("button", { hasText: "Release" }), new RegExp(`Released the handoff of ${handoffContact}`));
  assert.equal(await page.locator(`tr[data-contact="${handoffContact}"]`).count(), 0, "released: no longer listed");

  step = "handoffs: approve the waiting draft";
  const draft = page.locator("tr[data-draft]").filter({ hasText: draftContact });
  assert.equal(await draft.count(), 1, "the draft is listed");
  assert.match(await draft.locator("textarea").inputValue(), /89 EUR/);
  await clickThenFlash(draft.locator("button", { hasText: "Approve" }), new RegExp(`Approved the draft for ${draftContact}`));
  assert.equal(await page.locator("tr[data-draft]").filter({ hasText: draftContact }).count(), 0);

  step = "handoffs: edit a draft and send it as written";
  const toEdit = page.locator("tr[data-draft]").filter({ hasText: editContact });
  await toEdit.locator("textarea").fill("It's 69 EUR, and free delivery this week!");
  await clickThenFlash(toEdit.locator("button", { hasText: "Send edited" }), new RegExp(`Sent the edited draft to ${editContact}`));

  step = "handoffs: reject a draft";
  const toReject = page.locator("tr[data-draft]").filter({ hasText: rejectContact });
  await clickThenFlash(toReject.locator("button", { hasText: "Reject" }), new RegExp(`Rejected the draft for ${rejectContact}`));
  assert.equal(await page.locator("tr[data-draft]").count(), 0, "no draft left waiting");
  await shot("handoffs-after");

  step = "contact: look it up and see the approved reply";
  await page.click("text=Contact");
  await page.fill("#id", draftContact);
  await page.click("button:has-text('Look up')");
  await page.waitForSelector("h2");
  assert.match(await page.textContent("main"), /89 EUR this week/);
  assert.match(await page.textContent("main"), /price_question/);
  await shot("contact");

  step = "contact: export it";
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("text=Export (access request)"),
  ]);
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  assert.equal(exported.contact, draftContact);
  assert.ok(exported.transcript.length > 0);
  assert.ok(exported.run_history.some((r) => r.flow === "price_question"));

  step = "a form without its CSRF token is refused";
  const forged = await page.request.post(`${url}/console/flows/halt`, { form: { flow } });
  assert.equal(forged.status(), 403);

  step = "forget needs the id typed, then erases";
  await page.goto(`${url}/console/contacts?id=${encodeURIComponent(draftContact)}`);
  await page.fill("input[name=confirm]", "someone-else");
  await page.click("button:has-text('Forget')");
  await page.waitForSelector(".error");
  assert.match(await page.textContent(".error"), /Nothing was erased/);
  await page.fill("input[name=confirm]", draftContact);
  await clickThenFlash(page.locator("button:has-text('Forget')"), new RegExp(`Erased everything held about ${draftContact}`));

  step = "sign out";
  await page.click("header button:has-text('Sign out')");
  await page.waitForURL(/\/console\/login/);
  await page.goto(`${url}/console/overview`);
  assert.match(page.url(), /\/console\/login/);
  console.log("console: every step passed");
} catch (e) {
  console.error(`console test failed at: ${step}`);
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
