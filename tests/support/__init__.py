"""Shared test infrastructure (servers, certificates, harnesses)."""
