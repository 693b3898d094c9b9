// Package e2e tests the web console in a real browser. It has only tests:
// they build the ledgerd binary, run `ledgerd serve` on the embedded store,
// open the links `ledgerd console` prints in headless Chromium (Debian's
// chromium package, driven with chromedp) and do what the console's users
// do: sign in, watch an escalation arrive live, pick it up, lose a race,
// read a session's timeline as an auditor and as of a moment, and erase a
// session's notes as an admin. A screenshot of each page is saved in a
// temporary directory, printed when a test fails. The tests fail, never
// skip, when Chromium cannot start. See docs/console.md.
package e2e
