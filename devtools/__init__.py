"""Developer tools: the local demo, synthetic P&ID sets, Azurite on loopback, an Event Grid poster. Never deployed."""
