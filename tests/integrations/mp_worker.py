"""One worker process of the multiprocess test: runs the reference graph N times for a tenant.

Run as ``python -m tests.integrations.mp_worker TENANT N`` with PROMETHEUS_MULTIPROC_DIR set, like
a gunicorn worker; prints the priced cost it recorded (from an in-memory sink) as JSON.
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
    cost = sum((c.cost.total for c in memory.of(LLMCall) if c.cost), Decimal(0))
    print(json.dumps({"cost": str(cost), "calls": len(memory.of(LLMCall))}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
