"""Intelligent guidance and triage (智能导医分诊): symptoms in, conditions, department and urgency out."""
