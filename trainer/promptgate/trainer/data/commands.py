"""`promptgate data prepare` and `promptgate data rationales`.

Registering imports nothing heavy; the handlers import what they need. The teacher's API key
is read from the environment here and only here (the library takes it as an argument).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_TRAIN_EXTRA_HINT = "this command needs the train extra: pip install 'promptgate[train]'"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `data prepare` and `data rationales`; each sets `handler(args) -> exit code`."""
    data = sub.add_parser("data", help="prepare training data: splits, teacher rationales")
    steps = data.add_subparsers(dest="data_command", required=True, metavar="{prepare,rationales}")
    _register_prepare(steps)
    _register_rationales(steps)


def _register_prepare(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "prepare",
        help="normalize, deduplicate, balance and split labelled files",
        description=(
            "Read labelled JSONL/CSV/TSV files (.gz too) and/or Hugging Face data sets; normalize texts "
            "(NFC, stripped) and labels; drop empty texts, texts found in --exclude files, texts seen with "
            "both labels and repeats; balance; split stratified by label and category; write "
            "DIR/train.jsonl, DIR/val.jsonl (DIR/test.jsonl with --test-fraction) and DIR/manifest.json. "
            "Same inputs and seed, byte-identical outputs."
        ),
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="JSONL, CSV or TSV files (.gz allowed)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--hf-dataset", action="append", default=[], metavar="NAME[:split]",
        help="a Hugging Face data set (hub id or local folder; split defaults to train); repeatable",
    )  # fmt: skip
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of examples for val.jsonl (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="share for test.jsonl (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument(
        "--balance", choices=["none", "downsample", "upsample"], default="none",
        help="downsample: cut the larger label to the smaller before the split; upsample: repeat "
        "minority examples in train only (default none)",
    )  # fmt: skip
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help="at most N examples per label")
    p.add_argument(
        "--exclude", nargs="+", action="extend", default=[], type=Path, metavar="FILE",
        help="drop every example whose normalized text appears in these files (pass the test sets)",
    )  # fmt: skip
    p.add_argument("--text-field", default="text", help="field/column holding the text (default text)")
    p.add_argument("--label-field", default="label", help="field/column holding the label (default label)")
    p.set_defaults(handler=_prepare)


def _register_rationales(steps: argparse._SubParsersAction) -> None:
    p = steps.add_parser(
        "rationales",
        help="ask a teacher model for a one-sentence rationale per example",
        description=(
            "Ask an OpenAI-compatible /v1/chat/completions endpoint for one sentence per example explaining "
            "its gold label; answers are checked (one sentence, no label word, agrees with the label), cached "
            "(a rerun asks only what is missing) and written in input order to OUT; examples that could not "
            "get a rationale go to OUT's .rejects.jsonl with the reason. Exit status 1 when the teacher "
            "failed for some examples (a rerun retries them)."
        ),
    )
    p.add_argument("input", type=Path, metavar="IN.jsonl", help="examples (e.g. a split from data prepare)")
    p.add_argument("--out", required=True, type=Path, metavar="OUT.jsonl", help="examples with rationales")
    p.add_argument("--teacher-url", required=True, help="endpoint base, e.g. http://localhost:8000/v1")
    p.add_argument("--teacher-model", required=True, help="model name sent to the endpoint")
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
        help="environment variable holding the API key (default OPENAI_API_KEY; unset: no key sent)",
    )  # fmt: skip
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--retries", type=int, default=4, help="retries per request on 429/5xx/timeouts (default 4)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--attempts", type=int, default=3, help="answers asked per example when checks fail (default 3)")
    p.add_argument("--max-chars", type=int, default=300, help="longest accepted rationale (default 300)")
    p.add_argument("--temperature", type=float, default=0.3, help="sampling temperature (default 0.3)")
    p.add_argument("--max-tokens", type=int, default=256, help="max tokens per answer (default 256)")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubling (default 1)")
    p.add_argument("--cache", type=Path, default=None, metavar="PATH", help="answer cache (default OUT.cache.jsonl)")
    p.add_argument("--rejects", type=Path, default=None, metavar="PATH", help="rejects (default OUT.rejects.jsonl)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N examples")
    p.add_argument("--overwrite", action="store_true", help="ask even for examples that already have a rationale")
    p.add_argument("--retry-rejected", action="store_true", help="ask again for examples rejected in an earlier run")
    p.add_argument("--summary-json", type=Path, default=None, metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=_rationales)


def _prepare(args: argparse.Namespace) -> int:
    from .examples import DataError
    from .prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        balance=args.balance,
        max_per_class=args.max_per_class,
        text_field=args.text_field,
        label_field=args.label_field,
    )
    try:
        result = prepare_dataset(
            args.inputs, args.out, options, excludes=args.exclude, hf_datasets=args.hf_dataset
        )
    except DataError as exc:
        print(f"promptgate data prepare: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"promptgate data prepare: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.summary())
    return EXIT_OK


def _progress_printer(enabled: bool):
    if not enabled:
        return None

    def show(done: int, total: int) -> None:
        print(f"\rrationales: {done}/{total} asked", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return show


def _rationales(args: argparse.Namespace) -> int:
    try:
        import httpx  # noqa: F401 (the teacher client; checked here for a clear hint)
    except ImportError:
        print(f"promptgate data rationales: {_TRAIN_EXTRA_HINT}", file=sys.stderr)
        return EXIT_FAILED
    from .examples import DataError
    from .rationales import RationaleOptions, TeacherConfig, TeacherFatal, run_rationales

    teacher = TeacherConfig(
        url=args.teacher_url,
        model=args.teacher_model,
        api_key=os.environ.get(args.api_key_env) or None,
        timeout=args.timeout,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        trust_env=True,  # proxies as the environment says, like any HTTP client run by a user
    )
    options = RationaleOptions(
        concurrency=args.concurrency,
        retries=args.retries,
        attempts=args.attempts,
        max_chars=args.max_chars,
        backoff=args.backoff,
        limit=args.limit,
        overwrite=args.overwrite,
        retry_rejected=args.retry_rejected,
    )
    try:
        summary = run_rationales(
            args.input, args.out, teacher, options, cache_path=args.cache, rejects_path=args.rejects,
            progress=_progress_printer(not args.quiet and sys.stderr.isatty()),
        )  # fmt: skip
    except (DataError, TeacherFatal) as exc:
        print(f"promptgate data rationales: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"promptgate data rationales: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    print(summary.line())
    return EXIT_FAILED if summary.failed else EXIT_OK


__all__ = ["register"]
