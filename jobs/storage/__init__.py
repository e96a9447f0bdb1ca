"""Object storage backends (``file://``, ``s3://``) behind one contract (:mod:`jobs.storage.base`)."""
