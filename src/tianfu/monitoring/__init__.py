"""Vital-sign monitoring (患者生命体征集中监测): device ingest, storage, early-warning scores, alarms.

The clinical logic (``vitals``, ``scores``, ``alarms``) is pure: standard library only, no I/O, no
clock reads, so it can be tested exhaustively and replayed deterministically. Specification:
``docs/monitoring.md`` sections 1 and 2.
"""
