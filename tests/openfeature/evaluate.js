// Evaluates flags with the official OpenFeature server SDK and its OFREP provider, as an
// application would. Input on stdin: {"baseUrl", "token", "cases": [{"flag", "type", "default",
// "context"}]}, type one of boolean, number, object. Output on stdout: one JSON array, per case
// the SDK's evaluation details {value, reason, variant, errorCode, flagMetadata}.
const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

async function main() {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const { baseUrl, token, cases } = JSON.parse(input);
  await OpenFeature.setProviderAndWait(
    new OFREPProvider({ baseUrl, headers: token ? { Authorization: `Bearer ${token}` } : {} }),
  );
  const client = OpenFeature.getClient();
  const results = [];
  for (const c of cases) {
    const get = {
      boolean: (...a) => client.getBooleanDetails(...a),
      number: (...a) => client.getNumberDetails(...a),
      object: (...a) => client.getObjectDetails(...a),
    }[c.type];
    const d = await get(c.flag, c.default, c.context);
    results.push({
      value: d.value,
      reason: d.reason ?? null,
      variant: d.variant ?? null,
      errorCode: d.errorCode ?? null,
      flagMetadata: d.flagMetadata ?? {},
    });
  }
  process.stdout.write(JSON.stringify(results));
  await OpenFeature.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
