"""Device ingest: HL7 v2 over MLLP (IHE PCD-01), MQTT for wearables, FHIR Observations.

Every path turns what arrives into :class:`~tianfu.monitoring.ingest.message.DeviceReport` values and
hands them to the event bus; what cannot be understood goes to the dead-letter store, whole.
"""
