import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# One version, in topgun/__init__.py; read as text so building never imports the package.
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "topgun" / "__init__.py").read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)

# Extras follow how people install: the client alone stays light.
SERVER = ["gevent-websocket>=0.10.1"]            # the embedded dev cluster (topgun.server, `topgun server`)
CLI = ["ujson>=5.0"]                              # JSON in and out of `topgun get/put/watch`
# The pytest plugin: its embedded-cluster fixtures run the dev server, hence SERVER.
# hypothesis and psutil: the property-based and memory-bound tests that ship in the sdist; trustme:
# the test CA and certificates of the TLS fixtures (nginx, the dev server's --certfile).
OTEL = ["opentelemetry-api>=1.27"]                # topgun.contrib.otel (Meter.create_gauge came in 1.23)
PROMETHEUS = ["prometheus-client>=0.17"]          # topgun.contrib.prometheus, the Flask example's /metrics
# The shipped tests of both metrics sinks read the numbers back: the OpenTelemetry SDK's in-memory
# reader (opentelemetry-sdk, which brings the API) and prometheus-client's registry.
TEST = ["pytest>=7.4", "pytest-timeout>=2.2", "hypothesis>=6.80", "psutil>=5.9", "trustme>=1.1", *SERVER,
        "opentelemetry-sdk>=1.27", *PROMETHEUS]
WEB = ["flask>=2.3", "django>=4.2", "gunicorn>=21", "requests>=2.31",   # examples/flask_app.py, django_app.py
       *PROMETHEUS]
LOCUST = ["locust>=2.20"]                         # topgun.contrib.locust, examples/locustfile.py

setup(
    name="topgun",
    version=VERSION,
    description="Partition-aware, gevent-based blocking client for the TopGun data grid, with an embedded dev cluster",
    # Not README.md: that one starts with repo-only ./scripts steps and links files by relative path.
    long_description=(HERE / "docs" / "pypi.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="topgun-python developers",
    license="Apache-2.0",
    license_files=["LICENSE"],
    project_urls={
        "TopGun server": "https://github.com/TopGunBuild/topgun",
    },
    packages=find_packages(include=["topgun", "topgun.*"]),
    package_data={"topgun": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "msgpack>=1.0",
        "mmh3>=4.0",       # topgun.cluster.pool: key affinity to one connection of a node
        "fnv-hash-fast>=2.0; python_version >= '3.11'",  # C FNV-1a of ASCII keys, 15x the Python loop (issue 16); wheels for 3.11+ only, 3.10 uses the loop
        "tenacity>=8.2",
    ],
    extras_require={
        "server": SERVER,
        "cli": CLI,
        "test": TEST,
        "web": WEB,
        "locust": LOCUST,
        "otel": OTEL,
        "prometheus": PROMETHEUS,
        # everything scripts/test.sh installs, plus the tools of tox's lint and type envs
        "dev": sorted({*SERVER, *CLI, *TEST, *WEB, *LOCUST, *OTEL, *PROMETHEUS, "tox>=4", "ruff", "mypy",
                       "websocket-client>=1.6"}),
    },
    entry_points={
        "console_scripts": ["topgun=topgun.cli:main"],
        "pytest11": ["topgun=topgun.testing.plugin"],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Framework :: Pytest",
        "Topic :: Database",
        "Typing :: Typed",
    ],
)
