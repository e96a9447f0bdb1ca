"""The repository format: keys, encrypted blobs in packs, index files, snapshot manifests, locks.

Specified in ``jobs/FORMAT.md``; knows nothing of volumes (it stores chunks and trees). Its layers,
from the top (an import-linter contract in ``pyproject.toml`` keeps them): ``maintenance`` (check,
prune) and ``policy`` (retention); ``repository`` (the facade callers use); ``writer`` (packs) and
``reader`` (blobs); ``index_files``; one module per stored object (``config``, ``index``,
``packs``, ``keys``, ``locks``, ``snapshots``); ``crypto`` and ``tree`` at the bottom.
"""
