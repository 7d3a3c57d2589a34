"""Notifications: who is told what, through which channel, delivered from the outbox.

The seed kept its bot in a module-level registry; here a NotifierRegistry is built by the App and
handed to the delivery loop, and nothing is global.
"""
