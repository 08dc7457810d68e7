"""Evaluation of TEEs for federated learning: attack scenarios, measurements, reports.

Used by ``fedtee eval``; imports the server, client and attestation layers as a user would.
"""
