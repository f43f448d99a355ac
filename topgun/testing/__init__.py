"""Test helpers and the ``topgun`` pytest plugin (real server, embedded cluster, JWTs).

Registered as the pytest11 entry point ``topgun``: installing the package gives your test
suite the fixtures in :mod:`topgun.testing.plugin`.
"""
