"""Shared plumbing: config, memory log, job logs, seeding."""
