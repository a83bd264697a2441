"""Capacity planning on the simulator: the cheapest cluster that meets the SLOs.

``slo`` parses the goals; ``demand`` grows and extends a trace; ``candidates`` scales the
current cluster's node pools per GPU model; ``shapes`` adds other node shapes and MIG
layouts the demand makes worth trying; ``fluid`` prunes candidates that cannot carry the
demand even as a fluid (an LP and per-goal time windows); ``evaluate`` simulates one
candidate; ``search`` picks which candidates to simulate (process pool, shards);
``journal`` keeps each simulation as it completes, so a stopped run resumes;
``verdict`` turns evaluations into a recommendation and a Pareto front; ``quotas``
searches nominal quota splits on the answer; ``rightsizing`` reads a Prometheus export;
``figures`` and ``report`` write the HTML and Markdown report; ``commands`` is
``apportion plan``.
"""
