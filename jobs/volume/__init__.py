"""Volumes: walking and restoring filesystem trees with full metadata, and raw block devices."""
