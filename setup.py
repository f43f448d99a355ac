from setuptools import find_packages, setup

setup(
    name="topgun",
    version="0.1.0",
    description="Partition-aware, gevent-based blocking client for the TopGun data grid, with an embedded dev cluster",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["topgun", "topgun.*"]),
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "gevent-websocket>=0.10.1",
        "msgpack>=1.0",
        "mmh3>=4.0",
        "tenacity>=8.2",
        "ujson>=5.0",
    ],
    extras_require={
        # flask, django, gunicorn and requests run the web-app examples in the tests; trustme makes
        # the test CA and certificates for the TLS tests (nginx and the dev server's --certfile)
        "test": ["pytest>=7.4", "pytest-timeout>=2.2", "flask>=2.3", "django>=4.2", "gunicorn>=21",
                 "requests>=2.31", "trustme>=1.1"],
        "dev": ["pytest>=7.4", "pytest-timeout>=2.2", "flask>=2.3", "django>=4.2", "gunicorn>=21",
                "requests>=2.31", "trustme>=1.1", "tox>=4", "ruff", "mypy", "websocket-client>=1.6"],
        "locust": ["locust>=2.20"],
    },
    entry_points={
        "console_scripts": ["topgun=topgun.cli:main"],
        "pytest11": ["topgun=topgun.testing.plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Pytest",
        "Topic :: Database",
    ],
)
