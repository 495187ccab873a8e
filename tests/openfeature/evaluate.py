"""Evaluates flags with the official OpenFeature Python SDK and its OFREP provider, as an
application would. Input on stdin: {"baseUrl", "token", "cases": [{"flag", "type", "default",
"context"}]}, type one of boolean, number, object. Output on stdout: one JSON array, per case the
SDK's evaluation details {value, reason, variant, errorCode, flagMetadata}."""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main():
    plan = json.load(sys.stdin)
    token = plan["token"]
    api.set_provider(
        OFREPProvider(plan["baseUrl"], headers_factory=lambda: {"Authorization": f"Bearer {token}"} if token else {})
    )
    client = api.get_client()
    results = []
    for case in plan["cases"]:
        attributes = dict(case["context"])
        targeting_key = attributes.pop("targetingKey", None)
        context = EvaluationContext(targeting_key=targeting_key, attributes=attributes)
        get = {
            "boolean": client.get_boolean_details,
            "number": client.get_integer_details,
            "object": client.get_object_details,
        }[case["type"]]
        d = get(case["flag"], case["default"], context)
        results.append({
            "value": d.value,
            "reason": str(d.reason.value if hasattr(d.reason, "value") else d.reason) if d.reason else None,
            "variant": d.variant,
            "errorCode": d.error_code.value if d.error_code else None,
            "flagMetadata": dict(d.flag_metadata or {}),
        })
    json.dump(results, sys.stdout)
    api.shutdown()


if __name__ == "__main__":
    main()
