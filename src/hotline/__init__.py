"""Hotline: phone calls answered and placed by a speech-to-speech AI agent."""

__version__ = "0.1.0"
