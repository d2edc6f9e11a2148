"""Remote consultation (远程会诊): one institution invites another for an expert opinion on its patient.

The pure domain core, no I/O: :mod:`tianfu.consult.workflow` (the FHIR Task state machine, its gates and
response deadlines) and :mod:`tianfu.consult.signing` (reliable electronic signatures on opinion reports
over a canonical serialisation, amendments as a hash chain). Tables, API and pages build on them.
"""
