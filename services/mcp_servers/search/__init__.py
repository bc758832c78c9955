"""``search``: web search through an internal SearXNG instance's JSON API, with domain
allow- and deny-lists and result retention rules per use case."""
