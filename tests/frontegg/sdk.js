// Drives Frontegg's own Node SDK (`@frontegg/client`, unchanged) against a Tenantry gateway, for
// tests/tests/e2e/frontegg_sdk.rs. The SDK reads FRONTEGG_API_GATEWAY_URL when it is loaded;
// FRONTEGG_CLIENT_ID / FRONTEGG_API_KEY are the environment credentials; SDK_REFRESH_MS is how
// often the client polls the snapshot offset.
//
// Protocol: one JSON command per line on stdin, one `RESULT <json>` line per command on stdout
// (the SDK's logger may print other lines).
//   {"cmd": "checks", "cases": [{tenantId, userId?, permissions?, featureKey? | permissionKey?,
//     attributes?, dates?}]}   → {"offset": n, "results": [{"result", "justification"}]}
//   `dates` names attributes to pass as Date objects (commons compares dates with getTime()).
'use strict';

const readline = require('readline');
const { EntitlementsClient } = require('@frontegg/client');

function reply(value) {
  process.stdout.write('RESULT ' + JSON.stringify(value) + '\n');
}

async function decide(client, c) {
  const entity = {
    type: 'userToken',
    tenantId: c.tenantId,
    sub: c.userId,
    permissions: c.permissions || [],
  };
  const attributes = { ...(c.attributes || {}) };
  for (const name of c.dates || []) {
    attributes[name] = new Date(attributes[name]);
  }
  // A fresh scope per check: the SDK keeps wildcard permissions as global (`g`) regexes, whose
  // lastIndex would carry over from one check to the next.
  const scoped = client.forUser(entity);
  const target = c.featureKey !== undefined ? { featureKey: c.featureKey } : { permissionKey: c.permissionKey };
  try {
    const answer = await scoped.isEntitledTo(target, attributes);
    return { result: answer.result, justification: answer.justification || null };
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

async function main() {
  const started = Date.now();
  const client = await EntitlementsClient.init(
    { FRONTEGG_CLIENT_ID: process.env.FRONTEGG_CLIENT_ID, FRONTEGG_API_KEY: process.env.FRONTEGG_API_KEY },
    { refreshTimeoutMs: Number(process.env.SDK_REFRESH_MS || 500), retry: { numberOfTries: 1, secondsDelayRange: { min: 0, max: 0 } } },
  );
  await client.ready();
  reply({ ready: true, offset: client.offset, ms: Date.now() - started });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.cmd === 'checks') {
      const results = [];
      for (const c of command.cases) {
        results.push(await decide(client, c));
      }
      reply({ offset: client.offset, results });
    } else {
      reply({ error: 'unknown command ' + command.cmd });
    }
  }
  client.destroy();
  process.exit(0);
}

main().catch((e) => {
  reply({ error: String(e && e.stack ? e.stack : e) });
  process.exit(1);
});
