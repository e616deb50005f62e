"""Sequencer: an email sequencing engine for sales teams."""

__version__ = "0.1.0"
