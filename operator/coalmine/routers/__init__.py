"""Traffic routers: one module per provider behind the small ``TrafficRouter`` protocol.

Adding a provider is one file here, one line in ``registry.py`` and one entry in the router
contract test, which runs every router against real objects in a real cluster.
"""
