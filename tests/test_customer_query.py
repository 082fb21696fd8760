"""``GET /customers/{id}`` while the customer's partition is assigned but still being restored: 503
``restoring`` with ``Retry-After``, not 404 ``not_owned``."""

from __future__ import annotations

import json

from streams.kafka.partitioning import partition_for
from streams.runtime.worker import RESTORING_RETRY_AFTER_S, ProcessorRuntime
from streams.web import Request, customer_route


def test_a_customer_query_for_a_partition_still_restoring_is_503_restoring_with_retry_after(settings):
    runtime = ProcessorRuntime(settings, "127.0.0.1:1", instance_id="query-restoring", write_ticks=False)
    try:
        p = partition_for("ann", settings.topics.partitions)
        bob = next(c for c in (f"bob-{i}" for i in range(100)) if partition_for(c, settings.topics.partitions) != p)
        runtime.restoring = [p]  # assigned to this worker, its state not read back yet
        route = customer_route(runtime.customer)
        answer = route.handler(Request("GET", "/customers/ann", {}, {}, b"", params={"customer_id": "ann"}))
        assert answer.status == 503 and answer.headers["Retry-After"] == str(RESTORING_RETRY_AFTER_S)
        assert json.loads(answer.body) == {"error": "restoring", "customer_id": "ann", "partition": p,
                                           "restoring_partitions": [p], "retry_after_s": RESTORING_RETRY_AFTER_S}
        code, body = runtime.customer(bob)  # neither run nor restored here: another worker's
        assert code == 404 and body["error"] == "not_owned"
    finally:
        runtime.store.close()
