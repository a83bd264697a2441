"""The live driver: the admission webhook and the controller.

It turns the live cluster (watches, AdmissionReviews, Prometheus metrics) into
``scheduler`` Snapshots and the resulting Decisions into pod patches. It imports
``scheduler`` and never ``sim`` (tests/test_layering.py enforces this).
"""
