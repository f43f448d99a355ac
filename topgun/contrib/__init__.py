"""Integrations with third-party tools; each module imports its tool, this package imports nothing.

- :mod:`topgun.contrib.locust`: a Locust ``User`` whose client is a :class:`topgun.TopGunClient`
  (install the ``locust`` extra: ``pip install topgun[locust]``).
- :mod:`topgun.contrib.otel`: a metrics sink over OpenTelemetry (``topgun[otel]``).
- :mod:`topgun.contrib.prometheus`: a metrics sink over prometheus-client (``topgun[prometheus]``).
"""
