"""vLLM's offline batch path as a bulk-screening peer: `LLM.generate` over a JSONL file.

    python -m bench.offline INPUT.jsonl --model DIR --out ANSWERS.jsonl [--dtype float32 ...]

What someone who knows vLLM writes to screen a file in bulk, with the engine arguments
promptgate's vLLM engine uses for bulk work (`engine_kwargs` of the same settings: dtype,
block size, prefix caching, processed logprobs, context, KV cache, vLLM's offline step
defaults): read every text, tokenize them all at once (the FAST prompt promptgate builds, as
token ids), one `LLM.generate` call with `max_tokens=1`, `allowed_token_ids` = the labels'
first tokens and `logprobs=2`, and one output line per record. Timed from the first read to
the last line written (engine start excluded, as in `promptgate screen`'s summary).

`--freeze-heap` freezes the process's startup heap after the engine has loaded, as
`promptgate screen --local` does (`gc.freeze`; vLLM's `LLM` does not, its API server does):
on the 2-core CPU machine it took LLM.generate on test.jsonl's 1,517 texts from 576 and 558 to
890 and 758 rows/s. The bulk pairs run the peer both ways, the frozen one as a labelled row.

Prints one JSON object: rows, seconds, rows/s, and per row the malicious probability.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from bench._util import add_engine_arguments, cpu_engine_env, engine_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    add_engine_arguments(parser)
    # Run alone, vLLM's own defaults; every pair passes its settings (bench.bulk.offline_command).
    parser.set_defaults(dtype="auto", max_model_len=None, enforce_eager=False)
    parser.add_argument("--ready", type=Path, help="write this file once the engine is loaded (bench.profile)")
    parser.add_argument(
        "--engine-niceness", type=int, default=0,
        help="lower the engine processes' priority by this much, as promptgate does on CPU (default 0: as vLLM runs)",
    )  # fmt: skip
    parser.add_argument(
        "--freeze-heap", action="store_true",
        help="freeze the startup heap once the engine is loaded, as screen --local does (vLLM's LLM does not)",
    )  # fmt: skip
    args = parser.parse_args()

    import os

    os.environ.update({k: v for k, v in cpu_engine_env().items() if k.startswith("VLLM_")})
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    from promptgate.profiles import PromptBuilder, Verdict, resolve_profile
    from promptgate.server.engine.vllm_backend import engine_kwargs

    config = engine_config(args, model=args.model)
    kwargs = engine_kwargs(config.vllm_settings(20, offline=True), str(current_platform.device_type), args.model)
    llm = LLM(**kwargs)
    if args.engine_niceness:
        from promptgate.server.engine.priority import descendants, lower_priority

        lower_priority(descendants(), args.engine_niceness)  # every process LLM started is the engine's
    sched = llm.llm_engine.vllm_config.scheduler_config
    engine = {**kwargs, "max_num_batched_tokens": sched.max_num_batched_tokens, "max_num_seqs": sched.max_num_seqs}

    profile = resolve_profile(args.model)
    builder = PromptBuilder(AutoTokenizer.from_pretrained(args.model), profile)
    labels = builder.sequences.labels
    first = [seq[0] for seq in labels]
    malicious = {seq[0] for seq, spec in zip(labels, profile.labels, strict=True) if spec.verdict is Verdict.MALICIOUS}
    params = SamplingParams(
        max_tokens=1, temperature=0.0, allowed_token_ids=first, logprobs=len(first), detokenize=False
    )
    llm.generate([TokensPrompt(prompt_token_ids=builder.fast_prompt(builder.encode_text("warm up the engine")))],
                 params, use_tqdm=False)  # fmt: skip
    if args.freeze_heap:
        from promptgate.server.heap import freeze_startup_heap

        freeze_startup_heap()
    if args.ready:
        args.ready.write_text("ready\n")

    start = time.perf_counter()
    with open(args.input, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    texts = [r["text"] for r in records]
    prompts = [TokensPrompt(prompt_token_ids=builder.fast_prompt(ids)) for ids in builder.encode_texts(texts)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    probabilities = []
    with open(args.out, "w", encoding="utf-8") as out:
        for record, output in zip(records, outputs, strict=True):
            logprobs = output.outputs[0].logprobs[0]  # normalized over the allowed ids already
            probs = {t: math.exp(lp.logprob) for t, lp in logprobs.items()}
            p = sum(v for t, v in probs.items() if t in malicious) / sum(probs.values())
            probabilities.append(p)
            out.write(json.dumps({"id": record.get("id"), "malicious_probability": p, "is_malicious": p >= 0.5}) + "\n")
    seconds = time.perf_counter() - start
    rate = round(len(records) / seconds, 2)
    print(json.dumps({"rows": len(records), "seconds": round(seconds, 3), "rate_per_s": rate, "engine": engine,
                      "probabilities": probabilities}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
