"""Compliance evidence, data-subject rights, retention, backup and recovery."""
