"""The kernel: settings, database, event bus, security, audit, FHIR, patients and AI-output records.

It knows nothing clinical; the five capabilities plug into it.
"""
