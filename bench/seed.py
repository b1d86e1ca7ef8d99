"""The seed's approach, exactly as its users run it: rival-ai's NarasimhaAttackDetector, one
query at a time. It loads `sarthakrastogi/narasimha-b-0.6b` from the Hugging Face cache, so
the harness lays the benchmark model out there (HF_HOME) and sets HF_HUB_OFFLINE=1.

    python -m bench.seed --queries 50   # prints one JSON object
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time

from bench._util import load_queries
from bench.load import _report


def _detector_class() -> type:
    """The detector class from rival-ai's own source file.

    `import rival_ai` also imports its other detector, which needs sentence-transformers;
    the Narasimha detector's module needs only torch and transformers, so it is loaded from
    its file (the same code its users run) without the package's __init__.
    """
    import importlib.util

    spec = importlib.util.find_spec("rival_ai")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("rival-ai is not installed: pip install --no-deps rival-ai==0.1.7")
    path = f"{spec.submodule_search_locations[0]}/detectors/narasimha/detector.py"
    module_spec = importlib.util.spec_from_file_location("rival_ai_narasimha_detector", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.NarasimhaAttackDetector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=100, help="the detector's default")
    args = parser.parse_args()
    NarasimhaAttackDetector = _detector_class()

    with contextlib.redirect_stdout(io.StringIO()):  # the detector prints a line per query
        detector = NarasimhaAttackDetector(use_multiclass=False, device="cpu")
        detector.detect_attack("warm up", max_new_tokens=args.max_new_tokens)
        queries = load_queries(args.queries)
        latencies, verdicts = [], []
        start = time.perf_counter()
        for text in queries:
            t = time.perf_counter()
            verdicts.append(bool(detector.detect_attack(text, max_new_tokens=args.max_new_tokens)))
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    print(json.dumps(_report(len(queries), elapsed, latencies, verdicts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
