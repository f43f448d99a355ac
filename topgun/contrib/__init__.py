"""Integrations with third-party tools; each module imports its tool, this package imports nothing.

- :mod:`topgun.contrib.locust`: a Locust ``User`` whose client is a :class:`topgun.TopGunClient`
  (install the ``locust`` extra: ``pip install topgun[locust]``).
"""
