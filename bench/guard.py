"""Guardrail benchmark (issue 16): injection recall / false-positive rate on the held-out
evaluation set, per language and family, and the added latency per 1,000 characters.

    uv run python -m bench.guard [--json]

The evaluation set is ``bench.guard_corpus.evaluation()`` — templates and fillers the
classifier never saw (see that module). Every example goes through the same ``Guardrails``
the DLP workers run (detectors + the shipped Rego policy), use case ``chat``, direction
``input``; an attack counts as detected when the decision is ``guard.block.injection``, a
benign text as a false positive when it is. Medical questions are asked as the business unit
``hospital`` (where the policy denies no topic), everything else as ``claims``.

Latency: CPU time (``time.process_time_ns``, i.e. on one core, not wall time on a busy
machine) of one ``check`` of a ~1,000-character text, input (injection + topics + policy)
and output (moderation + policy), p50 and p95 over texts stitched from the evaluation set.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from bench.guard_corpus import evaluation, fresh_evaluation
from services.dlp.guard import PolicyContext
from services.dlp.guardrails import Guardrails
from services.dlp.settings import DlpSettings

TARGET_RECALL = 0.90
TARGET_FPR = 0.03
TARGET_MS_PER_1000 = 3.0


def _rate(hits: list[bool]) -> float:
    return round(sum(hits) / len(hits), 3) if hits else 0.0


def run() -> dict[str, Any]:
    guardrails = Guardrails(DlpSettings().guard_policy_dir)
    examples = evaluation()
    attacks: dict[tuple[str, str], list[bool]] = defaultdict(list)
    benign: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for example in examples:
        unit = "hospital" if example.family == "medical" else "claims"
        context = PolicyContext(usecase_class="chat", tenant="bench", business_unit=unit, user_role="analyst")
        decision = guardrails.check(list(example.texts), direction="input", context=context)
        detected = decision.rule_id == "guard.block.injection"
        (attacks if example.label else benign)[(example.language, example.family)].append(detected)

    def summary(table: dict[tuple[str, str], list[bool]]) -> dict[str, Any]:
        by_language: dict[str, list[bool]] = defaultdict(list)
        by_family: dict[str, list[bool]] = defaultdict(list)
        for (language, family), hits in table.items():
            by_language[language] += hits
            by_family[family] += hits
        everything = [h for hits in table.values() for h in hits]
        return {
            "n": len(everything),
            "rate": _rate(everything),
            "by_language": {k: {"n": len(v), "rate": _rate(v)} for k, v in sorted(by_language.items())},
            "by_family": {k: {"n": len(v), "rate": _rate(v)} for k, v in sorted(by_family.items())},
            "by_language_family": {f"{k[0]}/{k[1]}": {"n": len(v), "rate": _rate(v)} for k, v in sorted(table.items())},
        }

    fresh: dict[str, list[bool]] = defaultdict(list)
    for example in fresh_evaluation():  # written before the second training round, never tuned on
        context = PolicyContext(usecase_class="chat", tenant="bench", business_unit="claims", user_role="analyst")
        decision = guardrails.check(list(example.texts), direction="input", context=context)
        kind = "indirect_recall" if example.label else "role_false_positive_rate"
        fresh[f"{example.language}/{kind}"].append(decision.rule_id == "guard.block.injection")
    return {"recall": summary(attacks), "false_positive_rate": summary(benign),
            "fresh": {k: {"n": len(v), "rate": _rate(v)} for k, v in sorted(fresh.items())},
            "latency": latency(guardrails)}


def latency(guardrails: Guardrails, samples: int = 200) -> dict[str, float]:
    rng = random.Random(3)
    pool = [" ".join(e.texts) for e in evaluation()]
    context = PolicyContext(usecase_class="chat", tenant="bench", business_unit="claims", user_role="analyst")
    per_1000: dict[str, list[float]] = {"input": [], "output": []}
    for _ in range(samples):
        text = ""
        while len(text) < 1000:
            text += rng.choice(pool) + " "
        text = text[:1000]
        for direction in ("input", "output"):
            started = time.process_time_ns()
            guardrails.check([text], direction=direction, context=context)  # type: ignore[arg-type]
            per_1000[direction].append((time.process_time_ns() - started) / 1e6 * 1000 / len(text))
    return {
        f"{d}_{q}_ms_per_1000_chars": round(statistics.quantiles(v, n=20)[i] if q == "p95" else statistics.median(v), 3)
        for d, v in per_1000.items() for q, i in (("p50", 0), ("p95", 18))
    }


def main() -> int:
    result = run()
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
    else:
        recall, fpr, lat = result["recall"], result["false_positive_rate"], result["latency"]
        print(f"injection recall {recall['rate']:.3f} (n={recall['n']}) · false-positive rate {fpr['rate']:.3f} "
              f"(n={fpr['n']})  [targets ≥ {TARGET_RECALL}, ≤ {TARGET_FPR}]")
        for language in ("en", "de"):
            print(f"  {language}: recall {recall['by_language'][language]['rate']:.3f} "
                  f"(n={recall['by_language'][language]['n']}) · FPR {fpr['by_language'][language]['rate']:.3f} "
                  f"(n={fpr['by_language'][language]['n']})")
        print("recall per attack family:")
        for family, row in recall["by_family"].items():
            print(f"  {family:<13} {row['rate']:.3f} (n={row['n']})")
        print("false-positive rate per benign family:")
        for family, row in fpr["by_family"].items():
            print(f"  {family:<13} {row['rate']:.3f} (n={row['n']})")
        print("second held-out set (fresh_evaluation): " + ", ".join(
            f"{k} {v['rate']:.3f} (n={v['n']})" for k, v in result["fresh"].items()))
        print(f"latency (CPU, one core): input p50 {lat['input_p50_ms_per_1000_chars']:.2f} ms / 1,000 chars "
              f"(p95 {lat['input_p95_ms_per_1000_chars']:.2f}), output p50 {lat['output_p50_ms_per_1000_chars']:.2f} "
              f"(p95 {lat['output_p95_ms_per_1000_chars']:.2f})  [target ≤ {TARGET_MS_PER_1000}]")
    ok = (result["recall"]["rate"] >= TARGET_RECALL and result["false_positive_rate"]["rate"] <= TARGET_FPR
          and result["latency"]["input_p50_ms_per_1000_chars"] <= TARGET_MS_PER_1000)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
