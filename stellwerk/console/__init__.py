"""The operators' web console (issue 15): approvals, the story of a request, budgets and
spend, and a DLP playground — server-rendered, no JavaScript needed, nothing from a CDN.

It lives beside the CLI (``stellwerk``), not among the services: like the CLI it is an
operator's view of the mesh and reads the same stores the same way (approvals KV, AUDIT and
USAGE streams, budgets KV) and asks the same request-reply subjects (``dlp.screen``,
``tool.decide``). It holds no state of its own beyond a signed session cookie.
"""
