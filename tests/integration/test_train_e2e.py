"""`promptgate train` end to end on CPU: tiny-cpu.yaml (CI-sized with --set), kill -9 and resume,
export, serve the export, and the served FAST verdicts equal the evaluator's; a LoRA run exports
merged weights that load without peft.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from promptgate.client import Client

from ..support import REPO, SHARED_DATA, BackgroundServer, server_config

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "train.jsonl").is_file(), reason="needs ../shared/data (the labelled data)"
)

CLI = [sys.executable, "-m", "promptgate.cli"]
TINY = REPO / "trainer" / "recipes" / "tiny-cpu.yaml"
# tiny-cpu.yaml cut down to CI size: a few hundred examples, short texts, a smaller model.
# The recipe names the data relative to itself; a clone elsewhere finds it through SHARED_DATA.
DATA = [
    f"data.prepare.inputs=[{SHARED_DATA / 'train.jsonl'}]",
    f"data.exclude=[{SHARED_DATA / 'test.jsonl'}, {SHARED_DATA / 'ood_test.jsonl'}]",
]
SMALL = [
    *DATA,
    "data.prepare.max_per_class=160",
    "data.limit=240",
    "data.max_text_tokens=64",
    "model.init.hidden_size=64",
    "model.init.intermediate_size=128",
    "model.init.num_hidden_layers=2",
    "model.init.num_attention_heads=2",
    "model.init.vocab_size=1024",
    "training.per_device_train_batch_size=8",
    "training.max_steps=16",
    "training.save_steps=4",
    "training.save_total_limit=2",
    "training.logging_steps=4",
]
MAX_STEPS = 16


def cli_args(*args: str, overrides: list[str]) -> list[str]:
    return [*CLI, *args, *(x for o in overrides for x in ("--set", o))]


def run_cli(*args: str, overrides: list[str] = (), timeout: float = 600) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    return subprocess.run(cli_args(*args, overrides=list(overrides)), capture_output=True, text=True, timeout=timeout)


def train_here(recipe: Path, out: Path, overrides: list[str]) -> str:
    """`promptgate train` in this process (no interpreter start-up); returns what it printed."""
    from promptgate.trainer.sft import load_recipe, run_training

    lines: list[str] = []
    run_training(load_recipe(recipe, overrides), out, say=lines.append)
    return "\n".join(lines)


def steps_of(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-cpu run killed with SIGKILL after its first checkpoint, then resumed to the end."""
    out = tmp_path_factory.mktemp("tiny-cpu-run")
    log = open(out / "first.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cli_args("train", str(TINY), "--output-dir", str(out), overrides=SMALL), stdout=log, stderr=subprocess.STDOUT
    )
    first = out / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    log.close()
    assert first.is_file(), (out / "first.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it longer"
    assert not (out / "model").exists()

    # Without --resume the checkpoints are never overwritten silently.
    again = run_cli("train", str(TINY), "--output-dir", str(out), overrides=SMALL)
    assert again.returncode == 1 and "already holds checkpoints" in again.stderr and "--resume" in again.stderr
    # Resuming under a different recipe would continue another run: refused, naming the key.
    other = run_cli("train", str(TINY), "--output-dir", str(out), "--resume", overrides=[*SMALL, "training.seed=7"])
    assert other.returncode == 1 and "training.seed" in other.stderr, other.stderr

    done = run_cli("train", str(TINY), "--output-dir", str(out), "--resume", overrides=SMALL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming from" in done.stdout
    (out / "resumed.log").write_text(done.stdout + done.stderr)
    return out


def test_resume_reaches_the_same_final_step(trained: Path) -> None:
    resumed_from = int(
        next(line for line in (trained / "resumed.log").read_text().splitlines() if "resuming from" in line).rsplit(
            "-", 1
        )[1]
    )
    assert 4 <= resumed_from < MAX_STEPS
    last = trained / "checkpoints" / f"checkpoint-{MAX_STEPS}"
    assert steps_of(last) == MAX_STEPS
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    logged = [e["step"] for e in history if "loss" in e]
    # One continuous run: every logging step once, in order, up to the end.
    assert logged == sorted(set(logged)) and logged[-1] == MAX_STEPS and 4 in logged
    assert (last / "recipe.resolved.yaml").read_text() == (trained / "recipe.resolved.yaml").read_text()


def test_resumed_weights_equal_an_uninterrupted_runs(trained: Path, tmp_path: Path) -> None:
    """Seeded end to end and the RNG, optimizer and data order restored: the kill left no trace."""
    train_here(TINY, tmp_path, [*SMALL, "eval.enabled=false"])
    once = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert once == (trained / "model" / "model.safetensors").read_bytes()


def test_export_is_complete(trained: Path) -> None:
    model = trained / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "promptgate.json", "README.md",
                 "recipe.resolved.yaml", "training_log.json", "generation_config.json"):  # fmt: skip
        assert (model / name).is_file(), name
    resolved = yaml.safe_load((model / "recipe.resolved.yaml").read_text())
    assert resolved["training"]["max_steps"] == MAX_STEPS and resolved["data"]["limit"] == 240
    assert resolved["data"]["rationales"]["source"] == "template"
    profile = json.loads((model / "promptgate.json").read_text())
    assert profile["name"] == "promptgate" and profile["rationale_trained"] and profile["hybrid_thinking"]
    # The model was trained on texts of at most 64 tokens: the server's default window.
    assert profile["window_tokens"] == resolved["data"]["max_text_tokens"] == 64
    from transformers import AutoTokenizer

    from promptgate.profiles import qwen3_chat_template

    assert AutoTokenizer.from_pretrained(model).chat_template == qwen3_chat_template()
    card = (model / "README.md").read_text()
    for needle in ("## Data", "## Training", "## Metrics", "## Recipe", "STAND-IN", "| val |", "| excluded |",
                   "| train |", "test.jsonl", "Loss curve"):  # fmt: skip
        assert needle in card, needle
    # The metrics table holds the val split's FAST figures, from the evaluator.
    assert "| `val.jsonl` | fast |" in card
    assert "resumed from `checkpoint-" in card
    formats = [json.loads(line) for line in (trained / "data" / "formats.jsonl").read_text().splitlines()]
    # The 240 rows, then the recipe's obfuscated copies ("~family" after the original's id) and
    # window pieces (FAST, at most the 64-token window, half of them malicious).
    pieces = [f for f in formats if f["window_piece"]]
    originals = [f for f in formats if "~" not in f["id"] and not f["window_piece"]]
    copies = [f for f in formats if "~" in f["id"] and not f["window_piece"]]
    assert len(originals) == 240 and 0 < sum(f["format"] == "reasoned" for f in originals) < 240
    share = resolved["data"]["composites"]["share"]
    assert len(pieces) == 2 * round(share * 120) and {f["format"] for f in pieces} == {"fast"}
    assert sum(f["id"].endswith("~buried") for f in pieces) == len(pieces) // 2
    assert f"- Window pieces (data.composites): {len(pieces)} added" in card
    obfuscation = resolved["data"]["obfuscate"]
    assert {f["id"].split("~")[1] for f in copies} == set(obfuscation["families"])
    assert abs(len(copies) - obfuscation["share"] * 240) <= 2  # a share of each label, rounded
    assert {f["id"].split("~")[0] for f in copies} <= {f["id"] for f in originals}


def test_served_fast_verdicts_equal_the_evaluators(trained: Path, tmp_path: Path) -> None:
    """No train/serve skew on the evaluation side: `promptgate eval` and the server agree exactly."""
    model = trained / "model"
    out = tmp_path / "eval"
    ran = run_cli("eval", "--model", str(model), "--data", str(SHARED_DATA / "test.jsonl"), "--limit", "60",
                  "--out", str(out), "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 60 and {p["mode"] for p in predictions} == {"fast"}
    with BackgroundServer(server_config(model, max_text_chars=20000)) as srv, Client(srv.target, timeout=120) as c:
        served = c.classify_batch([p["text"] for p in predictions], mode="fast")
    for p, s in zip(predictions, served, strict=True):
        assert s.verdict.value == p["verdict"], p["text"][:80]
        assert abs(s.malicious_probability - p["malicious_probability"]) <= 1e-4


def test_lora_run_exports_merged_weights_that_load_without_peft(tmp_path: Path) -> None:
    out = tmp_path / "lora"
    train_here(
        TINY,
        out,
        [
            *SMALL,
            "training.max_steps=4",
            "training.learning_rate=0.01",
            "lora.r=4",
            "lora.alpha=8",
            "lora.target_modules=[q_proj, v_proj]",
            "eval.enabled=false",
        ],
    )
    model = out / "model"
    assert not (model / "adapter_config.json").exists() and not (model / "adapter_model.safetensors").exists()
    # A fresh interpreter where peft cannot be imported loads and runs the export.
    probe = f"""
import sys
sys.modules["peft"] = None
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(model)!r})
assert not any("lora" in k for k in load_file({str(model / "model.safetensors")!r}))
init = load_file({str(out / "init-model" / "model.safetensors")!r})
got = dict(m.named_parameters())
name = "model.layers.0.self_attn.q_proj.weight"
changed = not torch.equal(got[name].detach(), init[name])
frozen = torch.equal(got["model.layers.0.mlp.up_proj.weight"].detach(), init["model.layers.0.mlp.up_proj.weight"])
print("merged" if changed and frozen else "unchanged")
m(torch.tensor([[1, 2, 3]]))
"""
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    # The adapters moved q_proj (merged in) and left the modules LoRA did not target alone.
    assert res.stdout.strip() == "merged"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("PROMPTGATE_SLOW_TESTS"),
    reason="slow (the full tiny-cpu recipe, about 4-7 minutes on 2 cores): set PROMPTGATE_SLOW_TESTS=1",
)
def test_full_tiny_cpu_recipe_is_well_above_chance(tmp_path: Path) -> None:
    """The recipe as shipped, then `promptgate eval` on held-out test queries (chance is 0.5)."""
    out = tmp_path / "run"
    ran = run_cli("train", str(TINY), "--output-dir", str(out), overrides=DATA, timeout=1800)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    report_dir = tmp_path / "eval"
    ev = run_cli("eval", "--model", str(out / "model"), "--data", str(SHARED_DATA / "test.jsonl"), "--limit", "400",
                 "--out", str(report_dir), "--quiet")  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads((report_dir / "report.json").read_text())
    fast = next(r for r in report["results"] if r["mode"] == "fast" and r["file"].endswith("test.jsonl"))
    assert fast["n"] == 400 and not fast["collapse"]
    assert fast["accuracy"] >= 0.8 and fast["roc_auc"] >= 0.85, fast


def test_cli_reports_bad_recipes_and_missing_files(tmp_path: Path) -> None:
    bad = run_cli("train", str(TINY), "--set", "training.learning_rate=fast")
    assert bad.returncode == 2 and "training.learning_rate: expected a number, got 'fast'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_cli(
        "train", str(TINY), "--output-dir", str(tmp_path), overrides=["data.prepare=null", "data.train=nope.jsonl"]
    )
    assert missing.returncode == 1 and "data.train: no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    nowhere = run_cli("train", str(TINY), "--output-dir", str(tmp_path), "--resume", str(tmp_path / "checkpoint-9"))
    assert nowhere.returncode == 1 and "not a complete checkpoint directory" in nowhere.stderr
    nothing = run_cli("train", str(TINY), "--output-dir", str(tmp_path / "fresh"), "--resume")
    assert nothing.returncode == 1 and "no complete checkpoint" in nothing.stderr


def test_reproduction_recipe_runs_on_a_stand_in_base(tiny_model: Path, tmp_path: Path) -> None:
    """qwen3-0.6b-cot.yaml's own code path (a base model directory, rationales from the data's
    `rationale` field, bf16 and gradient checkpointing asked for) on the tiny model, for a few steps.

    The rationales stand in for a teacher's (none is reachable here); the recipe is the shipped one.
    """
    from promptgate.trainer.data import read_examples, write_examples
    from promptgate.trainer.sft.standin import template_rationale

    pool = read_examples(SHARED_DATA / "train.jsonl")
    picked = [ex for ex in pool if ex.label == "malicious"][:24] + [ex for ex in pool if ex.label == "benign"][:24]
    with_rationales = [
        ex.__class__(**{**ex.to_dict(), "rationale": template_rationale(ex.label, ex.category)}) for ex in picked
    ]
    write_examples(tmp_path / "train.jsonl", with_rationales[:20] + with_rationales[24:44])
    write_examples(tmp_path / "val.jsonl", with_rationales[20:24] + with_rationales[44:48])
    out = tmp_path / "run"
    printed = train_here(
        REPO / "trainer" / "recipes" / "qwen3-0.6b-cot.yaml",
        out,
        [
            f"model.name_or_path={tiny_model}",
            f"data.train={tmp_path / 'train.jsonl'}",
            f"data.val={tmp_path / 'val.jsonl'}",
            DATA[1],  # the exclude list, wherever this checkout is
            "training.max_steps=3",
            "training.per_device_train_batch_size=4",
            "training.gradient_accumulation_steps=2",
            "training.eval_steps=2",
            "eval.files=[]",
            "eval.engine=transformers",
            "eval.modes=[fast]",
            # The evasion copies ride along (they add rows, not steps: max_steps is fixed).
            "data.obfuscate.share=0.5",
            "data.obfuscate.families=[base64, tag_smuggling]",
        ],
    )
    assert "no GPU here, training in float32" in printed
    assert "eval_loss" in printed  # the val loss during training (eval_steps)
    model = out / "model"
    import torch
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(model / "model.safetensors").values()} == {torch.bfloat16}
    card = (model / "README.md").read_text()
    assert f"Base model: `{tiny_model}`" in card and "full fine-tune" in card
    assert "share trained with a rationale 0.7" in card and "| `val.jsonl` | fast | 8 |" in card
    formats = [json.loads(line) for line in (out / "data" / "formats.jsonl").read_text().splitlines()]
    originals = [f for f in formats if f["obfuscation"] is None]
    assert sum(f["format"] == "reasoned" for f in originals) == 28  # round(0.7 * 40)
    # Half of each label copied, the two families taking turns; every text canonicalized, and
    # the copies' evasions found (what the model trained on is the canonicalizer's output).
    copies = [f for f in formats if f["obfuscation"] is not None]
    assert len(copies) == 20 and {f["obfuscation"] for f in copies} == {"base64", "tag_smuggling"}
    for f in copies:
        assert ("decoded:base64" if f["obfuscation"] == "base64" else "tag_characters") in f["canonical_signals"]
    assert "- Canonicalization (data.canonicalize): every text went through" in card
    assert "- Obfuscated copies (data.obfuscate): 20 added (base64 10, tag_smuggling 10)" in card
