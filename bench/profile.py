"""Where the time goes: py-spy profiles of the serving and bulk paths (and of their vLLM peers).

    python -m bench.profile serve   [--rpc classify|batch|stream] [--concurrency 64] --out docs/profile/NAME
    python -m bench.profile expert  [--rpc classify|batch] [--concurrency 64] --out ...   # vllm serve, expert
    python -m bench.profile screen  --out ...    # promptgate screen --local --engine vllm
    python -m bench.profile offline --out ...    # vLLM's LLM.generate (bench.offline)

Each run starts the system on the tiny model (or --model), puts it under steady load, and
samples every process involved (the server or screen process and its vLLM engine-core child,
and the load generator) with `py-spy record --subprocesses` for --seconds. It writes
NAME.svg (a flame graph: one tower per process, width = CPU samples) and NAME.json (samples
per process and the frames with the most samples, inclusive and self), and prints the JSON.
`--rate 0` samples nothing and writes only NAME.json with each process's CPU time per query:
py-spy slows what it samples, so the CPU budget is read without it.

Needs py-spy (`pip install py-spy`) and permission to read other processes (root, or
ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from bench._util import (
    REPO,
    cpu_engine_env,
    engine_arguments,
    free_port,
    last_json,
    load_queries,
    promptgate_engine_flags,
    serve_command,
    serving_process,
    tiny_model,
    vllm_serve,
)
from bench.bulk import engine_env, offline_command

# The engine settings both sides of every pair run with (bench/__main__.py's defaults).
ENGINE = engine_arguments()
ENGINE_FLAGS = [*promptgate_engine_flags(ENGINE), "--max-text-chars", "4000"]


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


def record(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` and its subprocesses until it exits or is interrupted (SIGINT)."""
    cmd = [py_spy(), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", str(rate),
           "--nonblocking", "--output", str(out)]  # fmt: skip
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=log)


def stop(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
    spy.wait(120)


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return found


class CpuMeter:
    """CPU time (user + system, every thread, native ones included) of process trees, by process
    name: read every 0.2 s, so the last reading of a process that exits is kept."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuMeter:
        self._read()
        self.first = dict(self.last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self._read()

    def _read(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for root in self.roots:
            for pid in process_tree(root):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                    seconds = (int(fields[11]) + int(fields[12])) / tick
                    name = self.last.get(pid, ("", 0.0))[0]
                    if not name:  # an exiting process has no command line left: keep the name it had
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        name = _process_name(f'process {pid}:"{cmd.strip()}"') if cmd.strip() else ""
                    self.last[pid] = (name, seconds)

    def used(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for pid, (name, seconds) in self.last.items():
            totals[name] += seconds - self.first.get(pid, (name, 0.0))[1]
        return {name: round(v, 2) for name, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def read_stacks(path: Path, label: str | None = None) -> Counter[tuple[str, ...]]:
    """py-spy's raw (collapsed) stacks; the root frame names the process."""
    stacks: Counter[tuple[str, ...]] = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = head.split(";")
        root = None
        while frames and frames[0].startswith("process "):  # the chain of parent processes
            root = _process_name(frames.pop(0))
        stacks[(label or root or "process", *frames)] += int(count)
    return stacks


def _process_name(frame: str) -> str:
    cmd = frame.partition(":")[2].strip('"')
    if "VLLM::Worker" in cmd:
        return "vLLM worker"
    if "EngineCore" in cmd or ("multiprocessing" in cmd and "spawn" in cmd):
        return "vLLM engine core"
    if "bench.load" in cmd:
        return "load generator (bench.load)"
    for known in ("promptgate.cli serve", "promptgate.cli screen", "api_server", "bench.offline"):
        if known in cmd:
            return {"api_server": "vllm serve (API server)"}.get(known, known)
    return cmd[:60]


def summarize(stacks: Counter[tuple[str, ...]], top: int = 25) -> dict[str, object]:
    per_process: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    self_time: dict[str, Counter[str]] = defaultdict(Counter)
    for stack, n in stacks.items():
        process = stack[0]
        per_process[process] += n
        for frame in set(stack[1:]):
            inclusive[process][_short(frame)] += n
        if len(stack) > 1:
            self_time[process][_short(stack[-1])] += n
    total = sum(per_process.values()) or 1
    return {
        "samples": total,
        "processes": {
            p: {
                "share": round(n / total, 4),
                "inclusive": [(f, round(c / total, 4)) for f, c in inclusive[p].most_common(top)],
                "self": [(f, round(c / total, 4)) for f, c in self_time[p].most_common(top)],
            }
            for p, n in per_process.most_common()
        },
    }


def _short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py:12)`, as py-spy's default view shows it."""
    return re.sub(r"\((?:[^()]*/)?([^/()]+)\)$", r"(\1)", frame)


# -- a static flame graph (one tower per process) --------------------------------------------

_COLORS = ("#e8a23c", "#e07b39", "#d9603b", "#e8c33c", "#d98c3b", "#e0a95c")


def flame_svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1600, row: int = 17) -> str:
    tree: dict = {"n": 0, "kids": {}}
    for stack, n in stacks.items():
        node = tree
        node["n"] += n
        for frame in stack:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += n
    total = tree["n"] or 1
    depth = max((len(s) for s in stacks), default=1)
    height = (depth + 3) * row
    scale = (width - 20) / total
    rects: list[str] = []

    def walk(node: dict, x: float, level: int) -> None:
        for i, (name, kid) in enumerate(sorted(node["kids"].items(), key=lambda kv: -kv[1]["n"])):
            w = kid["n"] * scale
            if w >= 0.3:
                y = height - (level + 2) * row
                label = html.escape(_short(name))
                tip = f"{label} ({kid['n']} samples, {100 * kid['n'] / total:.2f}%)"
                text = label[: int(w / 7)] if w > 21 else ""
                rects.append(
                    f'<g><title>{tip}</title><rect x="{x + 10:.1f}" y="{y}" width="{max(w - 0.5, 0.1):.1f}" '
                    f'height="{row - 1}" fill="{_COLORS[(level + i) % len(_COLORS)]}" rx="1"/>'
                    + (f'<text x="{x + 13:.1f}" y="{y + row - 5}">{text}</text>' if text else "")
                    + "</g>"
                )
                walk(kid, x, level + 1)
            x += w

    walk(tree, 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<rect width="100%" height="100%" fill="#fdfdf6"/>'
        f'<text x="10" y="16" font-size="14">{html.escape(title)} ({total} samples; hover for names)</text>'
        + "".join(rects)
        + "</svg>\n"
    )


# -- the systems -------------------------------------------------------------------------------


def _load_cmd(system: str, target: str, args: argparse.Namespace, model: str) -> list[str]:
    cmd = [sys.executable, "-m", "bench.load", system, "--target", target, "--queries", str(args.queries),
           "--concurrency", str(args.concurrency), "--rpc", args.rpc]  # fmt: skip
    if system == "openai":
        cmd += ["--model", model, "--model-dir", model, "--variant", "expert"]
        cmd += ["--pretokenized"] if args.pretokenized else []
    return cmd


@contextlib.contextmanager
def promptgate_server(model: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    cmd = serve_command(model, port, ["--engine", "vllm", "--result-cache-size", "off", *ENGINE_FLAGS])
    with serving_process(cmd, port, timeout=900, env=cpu_engine_env(), cwd=REPO) as (target, proc):
        yield target, proc.pid


def _vllm_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", f"api_server.*--port {port}"], capture_output=True, text=True).stdout.split()
    return int(out[0])


def profile_under_load(server_pid: int, load_cmd: list[str], args: argparse.Namespace, work: Path) -> Counter:
    """Run the load to its end with every process sampled; CPU per process over the load."""
    load = subprocess.Popen(load_cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    spies = [record(pid, work / name, args.rate) for pid, name in ((server_pid, "server.txt"), (load.pid, "load.txt"))
             if args.rate]  # fmt: skip
    try:
        with CpuMeter([server_pid, load.pid]) as meter:
            out, _ = load.communicate(timeout=3600)
        args.cpu = meter.used()
        skip = ("verdicts", "probabilities", "canonical_unchanged")
        args.result = {k: v for k, v in last_json(out.decode()).items() if k not in skip}
    finally:
        for spy in spies:
            stop(spy)
        if load.poll() is None:
            load.kill()
    return read_stacks(work / "server.txt") + read_stacks(work / "load.txt", "load generator (bench.load)")


def profile_process(cmd: list[str], ready: Path, args: argparse.Namespace, work: Path, env: dict[str, str]) -> Counter:
    """Run `cmd` to its end, sampled (with CPU per process) from when `ready` exists and is not empty."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while not (ready.exists() and ready.stat().st_size):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} ended before it wrote {ready}")
            time.sleep(0.02)
        spy = record(proc.pid, work / "bulk.txt", args.rate) if args.rate else None
        started = time.perf_counter()
        with CpuMeter([proc.pid]) as meter:
            proc.wait(3600)
        args.cpu = meter.used()
        args.result = {"seconds_sampled": round(time.perf_counter() - started, 2)}
        if spy is not None:
            stop(spy)
    finally:
        if proc.poll() is None:
            proc.kill()
    return read_stacks(work / "bulk.txt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["serve", "expert", "screen", "offline"])
    parser.add_argument("--out", type=Path, required=True, help="NAME: writes NAME.svg and NAME.json")
    parser.add_argument("--model")
    parser.add_argument("--rpc", choices=["classify", "batch", "stream"], default="classify")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--pretokenized", action="store_true", help="expert: tokenize before the clock starts")
    parser.add_argument("--rate", type=int, default=100,
                        help="samples per second; 0: no py-spy, each process's CPU time only")  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="promptgate-profile-"))
    model = args.model
    if model is None:
        model = tiny_model(work / "tiny", profile="narasimha-b")

    if args.system == "serve":
        with promptgate_server(model) as (target, pid):
            stacks = profile_under_load(pid, _load_cmd("promptgate", target, args, model), args, work)
        title = f"promptgate serve (vLLM engine), {args.rpc} x {args.concurrency}"
    elif args.system == "expert":
        from bench.__main__ import engine_settings

        _, engine = engine_settings(ENGINE)
        with vllm_serve(model, expert=True, engine=engine) as url:
            stacks = profile_under_load(_vllm_pid(url), _load_cmd("openai", url, args, model), args, work)
        title = f"vllm serve (expert), {args.rpc} x {args.concurrency}"
    else:
        path = work / "input.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i, text in enumerate(load_queries(args.queries)):
                fh.write(json.dumps({"id": str(i), "text": text}) + "\n")
        out = work / "out.jsonl"
        env = engine_env(ENGINE) if args.system == "screen" else cpu_engine_env()
        if args.system == "screen":
            cmd = [sys.executable, "-m", "promptgate.cli", "screen", str(path), "--local", model, "--engine", "vllm",
                   "--out", str(out), "--quiet"]  # fmt: skip
            title = "promptgate screen --local --engine vllm"
            ready = out
        else:
            # LLM.generate writes nothing until the end: sample once its engine has loaded.
            ready = work / "ready"
            cmd = [*offline_command(model, path, out, ENGINE), "--ready", str(ready)]
            title = "vLLM LLM.generate (bench.offline)"
        stacks = profile_process(cmd, ready, args, work, env)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.rate:
        args.out.with_suffix(".svg").write_text(flame_svg(stacks, title), encoding="utf-8")
    cpu_ms = {name: round(1000 * v / args.queries, 3) for name, v in args.cpu.items()}
    summary = {"title": title, "queries": args.queries, "rate": args.rate, "run": args.result,
               "cpu_ms_per_query": {**cpu_ms, "all": round(sum(cpu_ms.values()), 3)},
               **(summarize(stacks) if args.rate else {})}  # fmt: skip
    text = json.dumps(summary, indent=1)
    args.out.with_suffix(".json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", os.pathsep.join(str(REPO / p) for p in ("", "client", "server", "trainer")))
    sys.exit(main())
