"""Capacity planning on the simulator: the cheapest cluster that meets the SLOs.

``slo`` parses the goals; ``demand`` grows and extends a trace; ``candidates`` scales the
current cluster's node pools per GPU model; ``fluid`` prunes candidates that cannot carry
the demand even as a fluid (an LP); ``evaluate`` simulates one candidate; ``search`` picks
which candidates to simulate (process pool, shards); ``verdict`` turns evaluations into a
recommendation, a Pareto front and quota advice; ``rightsizing`` reads a Prometheus
export; ``figures`` and ``report`` write the HTML and Markdown report; ``commands`` is
``apportion plan``.
"""
