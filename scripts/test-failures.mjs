// Prints the failed tests of vitest JSON reports (scripts/test-tiers.sh writes one per tier),
// a few lines each: CI keeps only the tail of a run's output, and a tier's failure must be
// readable there without the scrollback.
//   node scripts/test-failures.mjs REPORT.json...
import fs from 'node:fs';
import path from 'node:path';

const LINES = 20;
/** The message and the test's own frames: vitest's and node's frames say nothing here. */
const brief = (text) =>
  text
    .split('\n')
    .filter((l) => !/node_modules|node:internal|new Promise \(/.test(l))
    .slice(0, LINES)
    .join('\n    ');
for (const file of process.argv.slice(2)) {
  let report;
  try {
    report = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    console.log(`${path.basename(file)}: no report (${e.message})`);
    continue;
  }
  const tier = path.basename(file, '.json');
  for (const suite of report.testResults ?? []) {
    const rel = path.relative(process.cwd(), suite.name);
    const failed = (suite.assertionResults ?? []).filter((t) => t.status === 'failed');
    // A file that failed to load, or whose hooks failed, has a message and no failed test.
    if (suite.status === 'failed' && failed.length === 0) {
      console.log(`[${tier}] ${rel}: ${brief(suite.message || 'failed')}`);
    }
    for (const t of failed) {
      const msg = brief((t.failureMessages ?? []).join('\n'));
      console.log(`[${tier}] ${rel} > ${t.fullName}\n    ${msg}`);
    }
  }
}
