// Evaluates targeting cases with Frontegg's own evaluation library
// (`@frontegg/entitlements-javascript-commons`), for tests/tests/e2e/frontegg_targeting.rs.
//
// stdin: {"cases": [{"kind": "flag" | "plan", "on", "offTreatment", "defaultTreatment",
//   "rules", "attributes", "dates": [names]}]}. Attributes named in `dates` are passed as Date
// objects when they are strings (commons compares dates with getTime(), as an SDK caller
// passes them). stdout: a JSON array, per case {"treatment", "conditions"}: the case's
// treatment ("true" / "false" / "throws: <error type>"), and per rule, per condition, what
// commons decides for that condition alone (a plan whose one rule holds only that condition),
// so the test can tell which condition makes an answer differ.
'use strict';

const { evaluateFeatureFlag, evaluatePlan } = require('@frontegg/entitlements-javascript-commons');

function outcome(evaluate) {
  try {
    return evaluate().treatment;
  } catch (e) {
    return 'throws: ' + (e && e.constructor ? e.constructor.name : 'error');
  }
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (input += chunk));
process.stdin.on('end', () => {
  const { cases } = JSON.parse(input);
  const out = cases.map((c) => {
    const attributes = { ...c.attributes };
    for (const name of c.dates) {
      if (typeof attributes[name] === 'string') attributes[name] = new Date(attributes[name]);
    }
    const treatment = outcome(() =>
      c.kind === 'flag'
        ? evaluateFeatureFlag(
            { on: c.on, offTreatment: c.offTreatment, defaultTreatment: c.defaultTreatment, rules: c.rules },
            attributes,
          )
        : evaluatePlan({ defaultTreatment: c.defaultTreatment, rules: c.rules }, attributes),
    );
    const conditions = c.rules.map((rule) =>
      rule.conditions.map((condition) =>
        outcome(() =>
          evaluatePlan(
            {
              defaultTreatment: 'false',
              rules: [{ conditionLogic: 'and', treatment: 'true', conditions: [condition] }],
            },
            attributes,
          ),
        ),
      ),
    );
    return { treatment, conditions };
  });
  process.stdout.write(JSON.stringify(out));
});
