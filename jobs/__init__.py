"""snapmover's mover: runs inside a Kubernetes Job (``snapmover job upload|download``) or as the
``snapmover`` CLI, moving volume data to and from an encrypted, deduplicating repository.

Layers, lowest first (enforced by import-linter, see pyproject.toml): ``contract`` and
``errors`` → ``storage`` (file/S3 objects) → ``repository`` (format: keys, packs, index,
snapshots) and ``volume`` (filesystem trees and raw block devices) → ``engine`` (the pipelines
joining them) → ``kube`` (CR status from inside the Job) → ``cli``.
"""

__version__ = "0.1.0"
