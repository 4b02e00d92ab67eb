"""Event-driven retraining service for the P&ID symbol detector.

The package is the core of the service: pure functions (label conversion, archive checks,
policies) and thin adapters (storage, triggers). Heavy SDKs are imported lazily where needed.
"""
