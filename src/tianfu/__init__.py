"""Tianfu (天府智医): smart-healthcare AI platform."""

__version__ = "0.1.0"
