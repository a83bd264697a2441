"""The offline driver: public traces and a virtual clock in, simulated cluster runs out.

``sim`` turns a trace into the same ``Snapshot`` values the live webhook builds, hands them
to the pure decision core in ``scheduler``, and records what happens. It imports
``scheduler`` and never ``webhook`` (tests/test_layering.py enforces this).
"""
