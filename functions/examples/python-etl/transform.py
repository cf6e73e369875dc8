"""The etl pipeline's transform stage: a batch of numbered CSV lines in, records and rejected
rows out on events.etl.transformed and events.etl.rejected."""

import json

import squall

from records import transform_all

TRANSFORMED = "events.etl.transformed"
REJECTED = "events.etl.rejected"


def handler(event, context):
    good, bad = transform_all(event["items"])
    batch = {"upload": event["upload"], "batch": event["batch"]}
    # A retried attempt publishes the same messages again; the platform's per-invocation
    # message ids make the EVENTS stream keep one copy.
    if good:
        context.publish(TRANSFORMED, json.dumps({**batch, "items": good}))
    if bad:
        context.publish(REJECTED, json.dumps({**batch, "items": bad}))
    if context.attempt == 1 and any(r["customer"] == "retry-transform" for r in good):
        raise squall.Retry(after_ms=10, message="asked to retry after publishing (retry-transform)")
    context.logger.info(f"batch {event['batch']}: {len(good)} records, {len(bad)} rejected")
    return {"records": len(good), "rejected": len(bad)}
