"""Drivers of the real services on the real servers, shared by the benchmarks and the integration
tests (which import them from here: bench/ never imports from tests/).

* `processor`: the processor (`python -m services.dispatcher`) on topics of its own;
* `delivery`: the whole sending path, with the Postgres ledger and the SMTP sink;
* `projections`: the projection worker, a Postgres schema of its own, events produced to a topic;
* `spawn`: a service as a subprocess, bounded waits, /health, the CLIs (docs/benchmarks.md,
  "Harness", says which job is where);
* `kafka`: client options, a topic's committed records.
"""
