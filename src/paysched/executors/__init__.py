"""Executors carry out a payment: the ledger (default), later HTTP providers or user code."""
