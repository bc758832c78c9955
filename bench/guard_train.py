"""Train the guard's injection classifier and write ``services/kernel/guard/injection_model.json``.

    uv run --with scikit-learn==1.9.1 python -m bench.guard_train

scikit-learn is needed here only (not at run time, so it is not a project dependency): the
model is exported as plain JSON — n-gram → (idf, weight) plus the intercept — and scored in
pure Python by ``services.kernel.guard.classifier``. Data: ``bench.guard_corpus.training()``
(the project's own templates, Apache-2.0); the evaluation templates are never used here.
The run is deterministic (fixed seeds), so the artifact is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from typing import Any

from bench.guard_corpus import Example, training
from services.kernel.guard.classifier import FORMAT, MODEL_FILE, features
from services.kernel.guard.normalize import fold

MAX_FEATURES = 20000
C = 1.0


def analyzer(text: str) -> list[str]:
    return features(fold(text))


def main() -> int:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_score, recall_score

    examples: list[Example] = training()
    random.Random(7).shuffle(examples)
    cut = len(examples) // 10
    validation, train = examples[:cut], examples[cut:]
    texts = [" ".join(e.texts) for e in train]
    labels = [e.label for e in train]
    vectorizer = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, max_features=MAX_FEATURES, min_df=2)
    matrix = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    model.fit(matrix, labels)
    predicted = model.predict(vectorizer.transform([" ".join(e.texts) for e in validation]))
    truth = [e.label for e in validation]
    print(f"validation (from the training templates): n={len(validation)} "
          f"recall={recall_score(truth, predicted):.3f} precision={precision_score(truth, predicted):.3f}")

    vocabulary: dict[str, int] = vectorizer.vocabulary_
    idf = vectorizer.idf_
    coef = model.coef_[0]
    table = {term: [round(float(idf[i]), 4), round(float(coef[i]), 4)] for term, i in sorted(vocabulary.items())}
    body = json.dumps(table, ensure_ascii=False, sort_keys=True)
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16],
        "trained_on": {"examples": len(train), "attacks": sum(labels), "corpus": "bench/guard_corpus.py training()",
                       "licence": "Apache-2.0 (project's own)"},
        "hyperparameters": {"max_features": MAX_FEATURES, "min_df": 2, "C": C, "sublinear_tf": True,
                            "class_weight": "balanced"},
        "intercept": round(float(model.intercept_[0]), 4),
        "features": table,
    }
    MODEL_FILE.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size // 1024} KiB, {len(table)} features)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
