"""Tool gateway: the policy enforcement point between agents and the MCP servers of the
tool zone (issue 7). ``bus.py`` is its bus contract; the other modules are its core."""
