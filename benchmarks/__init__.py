"""Benchmarks of flask-relay-session against Flask-Session and Flask's cookie
session. Run ``python -m benchmarks --quick`` (or without ``--quick`` for the
full run used in the docs); see ``docs/performance.rst``.
"""
