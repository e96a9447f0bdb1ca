"""The data-path pipelines that join volumes and the repository: backup, restore, incremental."""
