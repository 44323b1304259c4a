"""One worker process of the multiprocess test: runs the reference graph N times for a tenant.

Run as ``python -m tests.integrations.mp_worker TENANT N`` with PROMETHEUS_MULTIPROC_DIR set, like
a gunicorn worker; prints the priced cost, calls and tokens it recorded (from an in-memory sink) as JSON.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal

from tests.graphs import INPUT, build_graph
from vital_callbacks import InMemorySink, LLMCall, Settings, VitalCallbackHandler
from vital_callbacks.sinks.prometheus import PrometheusSink


def main(tenant: str, runs: int) -> None:
    memory = InMemorySink()
    handler = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory, PrometheusSink()])
    graph = build_graph()
    for _ in range(runs):
        graph.invoke(INPUT, config={"callbacks": [handler], "metadata": {"tenant_id": tenant}})
    handler.shutdown()
    calls = memory.of(LLMCall)
    cost = sum((c.cost.total for c in calls if c.cost), Decimal(0))
    tokens = sum(c.usage.input + c.usage.output for c in calls)
    print(json.dumps({"cost": str(cost), "calls": len(calls), "tokens": tokens}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
