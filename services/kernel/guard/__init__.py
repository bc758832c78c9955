"""The guard's detectors (issue 16), shared by the DLP service and the tool gateway. Pure.

    normalize.py   fold obfuscation away (NFKC, invisible characters, homoglyphs, leetspeak,
                   spelled-out letters); hidden payloads (tag characters, base64, ROT13)
    rules.py       fast injection / jailbreak rules, English and German
    classifier.py  character + word n-gram TF-IDF logistic regression, pure-Python scoring of
                   ``injection_model.json`` (trained by ``bench/guard_train.py``)
    lexicon.py     topic (medical / investment / legal advice) and harm-category lexicons
    detector.py    one entry point per check: ``scan_injection``, ``scan`` (tool results),
                   ``topics``, ``moderation``

Decisions (allow / flag / review / block / replace) are policy, not here: the DLP service's
guardrail layer (``services/dlp/guardrails.py``) feeds these scores to Rego.
"""
