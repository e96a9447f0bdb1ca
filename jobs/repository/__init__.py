"""The repository format: keys, encrypted blobs in packs, index files, snapshot manifests, locks.

Specified in ``jobs/FORMAT.md``; knows nothing of volumes (it stores chunks and trees).
"""
