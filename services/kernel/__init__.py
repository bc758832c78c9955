"""The shared kernel: pure logic that more than one service needs (DESIGN.md §2).

Rules: no I/O, no bus, no service imports — a kernel module imports only the standard
library, third-party pure libraries and ``schemas``. Services import the kernel; the kernel
never imports a service, the runtime or the ``stellwerk`` CLI package (tests/unit/
test_boundaries.py enforces the import rules for every package).

    gcra.py          rate-limit math (GCRA): one theoretical arrival time per limit
    limit_spec.py    a rate limit as configured (gateway and tool gateway sections)
    pricing.py       a model call's cost at call time: GPU-seconds, token and GPU-hour price
    call_context.py  what the tool gateway tells an MCP server about a call (``_meta`` keys)
    tokens.py        the one token counter: offline tiktoken tables, chat framing, cheap estimate
    end_user.py      the end user's keyed per-tenant pseudonym (HMAC; the raw id never travels)
    variants.py      canary and shadow: which variant a request gets, whether a variant breached
    guard/           the guard's detectors (injection rules, classifier, lexicons), DLP and tool gateway
    cli_conventions.py  ``--format table|json|jsonl``, the exit codes every CLI shares, the
                     operator behind a change (``--actor``) and ``run_on_mesh`` (an unreachable
                     mesh: exit 3 and one message)
"""
