"""Schemathesis hooks for the adversarial stage (.ci/adversarial.py loads this file).

A create that carries an `Idempotency-Key` replays its first answer when the key comes again,
even once the resource it created was deleted: a retry never creates twice (README, "Idempotent
writes"). Schemathesis generates the header from its schema, so small values such as "0" recur
across stateful scenarios, and a replayed create hands back the ID of an account another scenario
deleted; `ensure_resource_availability` then reads the following 404 (reported on the follow-up
operation, whose checks the creates' settings do not reach) as a create that did not happen.
Every valid generated key is therefore made unique, so each generated create is a new request, as
schemathesis assumes. Invalid keys are sent as generated: their 400 is still tested. Replays
themselves are tested by the REST and gRPC idempotency tests.
"""

import re
import uuid

import schemathesis

HEADER = "idempotency-key"
# The services' rule (common::idempotency::is_valid_key): 1-255 printable ASCII characters.
VALID = re.compile(r"[ -~]{1,255}")
SUFFIX_CHARS = 33  # "-" and 32 hex digits


@schemathesis.hook
def map_headers(context, headers):
    # At generation, not before the call: an edit in `before_call` makes schemathesis
    # revalidate the case and relabel negative cases (a removed `Authorization`) as positive.
    if not headers:
        return headers
    for name, value in list(headers.items()):
        if name.lower() == HEADER and isinstance(value, str) and VALID.fullmatch(value):
            headers[name] = f"{value[:255 - SUFFIX_CHARS]}-{uuid.uuid4().hex}"
    return headers
