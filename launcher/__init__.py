"""snapmover's launcher: watches DataUpload/DataDownload CRs and runs one mover Job per CR.

It imports nothing of the mover except ``jobs.contract`` (enforced by import-linter).
"""
