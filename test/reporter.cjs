// Mocha's spec reporter, plus one plain closing line "N passed, N failed[, N skipped]" that CI
// tooling reads regardless of the test runner. CommonJS because mocha require()s reporters.
'use strict';
const Mocha = require('mocha');

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SpecWithSummary extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const s = this.stats;
      // Under test/run-suite.mjs (groups run side by side) the counts go to a file and the runner
      // prints one line for all groups.
      if (process.env.SHOAL_STATS_FILE) {
        require('node:fs').writeFileSync(process.env.SHOAL_STATS_FILE, JSON.stringify({ passes: s.passes, failures: s.failures, pending: s.pending }));
        return;
      }
      const skipped = s.pending > 0 ? `, ${s.pending} skipped` : '';
      process.stdout.write(`${s.passes} passed, ${s.failures} failed${skipped}\n`);
    });
  }
}

module.exports = SpecWithSummary;
