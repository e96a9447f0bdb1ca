"""Shared pytest configuration: fixture plugins for the real servers tests talk to.

Every process a test starts inherits ``AWS_EC2_METADATA_DISABLED=true``: a boto3 client left
without credentials (the tests of missing credentials do that on purpose) would otherwise ask
the cloud metadata address for them. Nothing here may reach it; the real node's guard rule
rejects and counts such packets besides (tests/cluster/node.py).
"""

import os

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.cluster",
    "tests.figures",
]
