"""Wiring: dispatcher, job functions, worker settings, the local runner."""
