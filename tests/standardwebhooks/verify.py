"""Verifies webhook requests with the Standard Webhooks reference library.

Reads {"secret": "whsec_...", "messages": [{"headers": {...}, "body": "..."}]} on stdin and
prints a JSON list: "ok" or the verifier's error, per message.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook

request = json.load(sys.stdin)
hook = Webhook(request["secret"])
results = []
for message in request["messages"]:
    try:
        hook.verify(message["body"].encode("utf-8"), message["headers"])
        results.append("ok")
    except Exception as error:  # noqa: BLE001 - reported to the test
        results.append(f"{type(error).__name__}: {error}")
json.dump(results, sys.stdout)
