"""Shared pytest configuration: fixture plugins for the real servers tests talk to."""

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
]
