"""`promptgate data rationales`: one teacher-written sentence per example, resumable, checked.

For each example a teacher model behind any OpenAI-compatible `/v1/chat/completions`
endpoint (a hosted model, or a local `vllm serve`) is given the text, its gold label and
category, and asked for ONE sentence saying why the text is or is not a prompt attack.

- Concurrency: `concurrency` requests in flight (one httpx AsyncClient, pooled connections).
- Retries: 429, 5xx, timeouts and connection errors are retried with exponential backoff and
  jitter, waiting at least what a `Retry-After` header asks; other 4xx are not retried (the
  same request would fail the same way): a 400 rejects that example, while 401/403/404 stop
  the run, since they mean a wrong key, URL or model name and every request would fail.
- Checks: each answer goes through `rationale_check.check_rationale` (one sentence, no label
  word, agrees with the label); a rejected answer is asked again with a note saying why, up
  to `attempts` times, then the example goes to the rejects file with the reason.
- Cache: an append-only JSONL file keyed by a hash of (teacher model, prompt version, text,
  label, category), one `write()` and one `fsync()` per line, so every answer paid for
  survives a crash; a rerun (after kill -9 too: a torn last line is cut off) asks only for
  what is missing. Final rejections are cached as well (a rerun does not pay for them again;
  `retry_rejected` asks again); teacher failures are not (a rerun retries them).
- Output: the input examples with `rationale` filled, in input order; every input example is
  either there or in the rejects file, exactly once.
"""

from __future__ import annotations

import asyncio
import email.utils
import fcntl
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .examples import DataError, Example, read_examples, write_atomic, write_examples
from .rationale_check import DEFAULT_MAX_CHARS, check_rationale, clean_rationale

if TYPE_CHECKING:
    import httpx

# Part of every cache key: a change of the prompt below must change this, so that answers to
# the old prompt are not served for the new one.
PROMPT_VERSION = "v1"
# Long jailbreak templates are cut in the prompt (the key keeps the whole text): the sentence
# needs the gist, and a teacher's context is finite.
MAX_PROMPT_TEXT_CHARS = 6000
MESSAGE_OPEN, MESSAGE_CLOSE = "<<<MESSAGE", "MESSAGE>>>"

SYSTEM_PROMPT = (
    "You write training data for a classifier that screens the messages users send to AI agents. "
    "A prompt attack is a message that tries to make the agent ignore or override its instructions "
    "(prompt injection, jailbreak, role-play to escape rules), reveal its system prompt or secrets, "
    "misuse its tools, or produce harmful content. You are given a message, its correct label and "
    "category, and you explain the label in ONE sentence that points at what in the message shows it. "
    'Never use the words "malicious" or "benign". Reply with the sentence only.'
)

_MEANING = {"malicious": "a prompt attack", "benign": "not a prompt attack"}


def build_messages(example: Example, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[dict[str, str]]:
    """The chat messages that ask the teacher for `example`'s rationale (prompt version PROMPT_VERSION)."""
    text = example.text
    if len(text) > MAX_PROMPT_TEXT_CHARS:
        text = text[:MAX_PROMPT_TEXT_CHARS] + " [... truncated]"
    is_or_not = "is" if example.label == "malicious" else "is not"
    user = (
        f"Message:\n{MESSAGE_OPEN}\n{text}\n{MESSAGE_CLOSE}\n\n"
        f"Gold label: {example.label} ({_MEANING[example.label]})\n"
        f"Category: {example.category or 'none'}\n\n"
        f"Write ONE sentence (under {max(8, max_chars // 7)} words) explaining why this message {is_or_not} "
        'a prompt attack. Do not use the words "malicious" or "benign". Reply with the sentence only.'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def corrective_note(example: Example, reason: str) -> str:
    is_or_not = "is" if example.label == "malicious" else "is not"
    return (
        f"That answer was rejected: {reason}. Reply again with exactly one sentence explaining why the "
        f'message {is_or_not} a prompt attack, without the words "malicious" or "benign".'
    )


def cache_key(teacher_model: str, example: Example) -> str:
    payload = json.dumps(
        [teacher_model, PROMPT_VERSION, example.text, example.label, example.category], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chat_completions_url(url: str) -> str:
    """The endpoint for a base URL given as `http://host:port`, `.../v1`, or the full path."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


@dataclass(frozen=True)
class TeacherConfig:
    url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    temperature: float = 0.3
    max_tokens: int = 256
    # httpx's proxy settings from the environment: off in the library (only the entry point
    # reads the environment); the CLI turns it on.
    trust_env: bool = False


@dataclass(frozen=True)
class RationaleOptions:
    concurrency: int = 8
    retries: int = 4  # per request, on 429/5xx/timeouts/connection errors
    attempts: int = 3  # per example, on answers that fail the checks
    max_chars: int = DEFAULT_MAX_CHARS
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    limit: int | None = None
    overwrite: bool = False  # ask even for examples that already have a rationale
    retry_rejected: bool = False  # ask again for keys whose rejection is cached
    seed: int | None = None  # jitter; None: fresh randomness

    def check(self) -> None:
        for name in ("concurrency", "attempts"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1")
        if self.retries < 0:
            raise DataError("retries must be at least 0")
        if self.limit is not None and self.limit < 0:
            raise DataError("limit must be at least 0")


@dataclass
class RationaleSummary:
    examples: int = 0
    had_rationale: int = 0  # kept as they were (no --overwrite)
    cached: int = 0  # answered from the cache (accepted or rejected)
    asked: int = 0  # distinct texts sent to the teacher
    requests: int = 0  # HTTP requests, retries and corrective attempts included
    written: int = 0
    rejected: int = 0  # answers failed the checks `attempts` times
    failed: int = 0  # the teacher failed (retries exhausted, or a 4xx such as 400)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reject_kinds: Counter[str] = field(default_factory=Counter)
    cache_lines_dropped: int = 0  # a torn last line (crash) or an unreadable line: asked again
    seconds: float = 0.0

    def add_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for name in ("prompt_tokens", "completion_tokens"):
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, (getattr(self, name) or 0) + value)

    def line(self) -> str:
        tokens = (
            f"tokens {self.prompt_tokens or 0} prompt + {self.completion_tokens or 0} completion"
            if self.prompt_tokens is not None or self.completion_tokens is not None
            else "tokens not reported"
        )
        kinds = f" ({', '.join(f'{k} {n}' for k, n in sorted(self.reject_kinds.items()))})" if self.reject_kinds else ""
        kept = f", kept {self.had_rationale}" if self.had_rationale else ""
        return (
            f"rationales: {self.examples} examples, asked {self.asked} ({self.requests} requests), "
            f"cached {self.cached}{kept}, written {self.written}, rejected {self.rejected}, "
            f"failed {self.failed}{kinds}; {tokens}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "reject_kinds"}
        data["reject_kinds"] = dict(sorted(self.reject_kinds.items()))
        return data


# Reject kinds that are the teacher's failure, not the answer's (a rerun asks again).
TEACHER_FAILURES = frozenset({"teacher_unavailable"})


class TeacherError(Exception):
    """The teacher did not answer one request (after retries, or with a non-retried status)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TeacherFatal(Exception):
    """An answer that every request would get (401/403/404): the run stops."""


# -- the cache ------------------------------------------------------------------------------


def _cut_torn_tail(path: Path) -> int:
    """Cut the file back to its last newline (a line torn by a crash); bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(0)
        data = fh.read()
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


class RationaleCache:
    """Append-only JSONL of teacher answers by key; safe to kill at any point."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        self.dropped_lines = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # Two runs appending to one cache would interleave; the second is refused.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise DataError(f"the cache {self.path} is in use by another run") from None
        torn = _cut_torn_tail(self.path)
        self.dropped_lines = 1 if torn else 0
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.dropped_lines += 1  # unreadable: that key is simply asked again

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        # One write() per line on an O_APPEND descriptor, then fsync: a crash leaves whole
        # lines plus at most one torn last line, which the next open cuts off.
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (rare on regular files): finish the line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self.entries[entry["key"]] = entry

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RationaleCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the teacher client --------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
    """Seconds asked by a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Teacher:
    """Chat completions with retries over one pooled httpx client."""

    def __init__(
        self, config: TeacherConfig, options: RationaleOptions, http: httpx.AsyncClient, summary: RationaleSummary
    ) -> None:
        self.config = config
        self.options = options
        self.http = http
        self.summary = summary
        self.url = chat_completions_url(config.url)
        self._rng = random.Random(options.seed)
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.options.max_backoff, self.options.backoff * 2**attempt)
        # Jitter spreads the retries of many concurrent requests that failed together.
        delay = backoff * self._rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.options.max_retry_after))
        return delay

    async def complete(self, messages: list[dict[str, str]]) -> str:
        import httpx

        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        problem = ""
        for attempt in range(self.options.retries + 1):
            retry_after = None
            self.summary.requests += 1
            try:
                response = await self.http.post(self.url, json=body, headers=self._headers)
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection error ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                        content = data["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        problem = f"unexpected response body: {response.text[:200]!r}"
                    else:
                        self.summary.add_usage(data.get("usage"))
                        return content if isinstance(content, str) else ""
                elif status in (401, 403, 404):
                    raise TeacherFatal(
                        f"the teacher at {self.url} answered HTTP {status}: {response.text[:300].strip()} "
                        "(check --teacher-url, --teacher-model and the API key variable)"
                    )
                elif status == 429 or status >= 500:
                    problem = f"HTTP {status}: {response.text[:200].strip()}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                else:  # any other 4xx: this request is wrong, and asking again will not change it
                    raise TeacherError(f"http_{status}", f"HTTP {status}: {response.text[:300].strip()}")
            if attempt < self.options.retries:
                await asyncio.sleep(self._delay(attempt, retry_after))
        raise TeacherError("teacher_unavailable", f"gave up after {self.options.retries + 1} requests: {problem}")


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    rationale: str | None = None
    kind: str | None = None  # reject kind when rationale is None
    reason: str | None = None
    last_answer: str | None = None
    attempts: int = 0


@dataclass
class RationaleResult:
    examples: list[Example]
    rejects: list[dict[str, Any]]
    summary: RationaleSummary


class _Run:
    def __init__(self, teacher: Teacher, cache: RationaleCache, options: RationaleOptions) -> None:
        self.teacher = teacher
        self.cache = cache
        self.options = options
        self.summary = teacher.summary

    async def ask(self, key: str, example: Example) -> _Outcome:
        messages = build_messages(example, max_chars=self.options.max_chars)
        self.summary.asked += 1
        problem: tuple[str, str] = ("empty", "no answer")
        answer = ""
        for attempt in range(1, self.options.attempts + 1):
            try:
                answer = await self.teacher.complete(messages)
            except TeacherError as exc:
                # Not cached: the teacher, not the example, failed, so a rerun asks again.
                return _Outcome(kind=exc.kind, reason=str(exc), last_answer=answer or None, attempts=attempt)
            rationale = clean_rationale(answer)
            found = check_rationale(rationale, example.label, max_chars=self.options.max_chars)
            if found is None:
                self.cache.put(
                    {"key": key, "rationale": rationale, "model": self.teacher.config.model,
                     "prompt_version": PROMPT_VERSION, "id": example.id, "attempts": attempt}
                )  # fmt: skip
                return _Outcome(rationale=rationale, attempts=attempt)
            problem = found
            messages = [*messages, {"role": "assistant", "content": answer},
                        {"role": "user", "content": corrective_note(example, found[1])}]  # fmt: skip
        kind, reason = problem
        reason = f"{reason} (after {self.options.attempts} attempts)"
        self.cache.put(
            {"key": key, "rejected": reason, "kind": kind, "last_answer": answer, "model": self.teacher.config.model,
             "prompt_version": PROMPT_VERSION, "id": example.id, "attempts": self.options.attempts}
        )  # fmt: skip
        return _Outcome(kind=kind, reason=reason, last_answer=answer, attempts=self.options.attempts)

    def from_cache(self, key: str, example: Example) -> _Outcome | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        rationale = entry.get("rationale")
        if isinstance(rationale, str):
            # Checked again: the limits may have changed since it was cached; then it is asked anew.
            if check_rationale(rationale, example.label, max_chars=self.options.max_chars) is None:
                return _Outcome(rationale=rationale)
            return None
        if "rejected" in entry and not self.options.retry_rejected:
            return _Outcome(kind=str(entry.get("kind", "rejected")), reason=f"{entry['rejected']} (cached)",
                            last_answer=entry.get("last_answer"), attempts=0)  # fmt: skip
        return None


async def generate_rationales(
    examples: Sequence[Example],
    teacher_config: TeacherConfig,
    options: RationaleOptions,
    cache_path: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RationaleResult:
    """Rationales for `examples` (see the module docstring); the cache is written as answers come."""
    import httpx

    options.check()
    summary = RationaleSummary(examples=len(examples))
    outcomes: dict[str, _Outcome] = {}
    todo: dict[str, Example] = {}  # one request per distinct key, however often the text repeats
    keys: list[str | None] = []
    with RationaleCache(cache_path) as cache:
        summary.cache_lines_dropped = cache.dropped_lines
        limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(teacher_config.timeout), limits=limits, trust_env=teacher_config.trust_env
        ) as http:
            run = _Run(Teacher(teacher_config, options, http, summary), cache, options)
            for example in examples:
                if example.rationale and not options.overwrite:
                    summary.had_rationale += 1
                    keys.append(None)
                    continue
                key = cache_key(teacher_config.model, example)
                keys.append(key)
                if key in outcomes or key in todo:
                    continue
                cached = run.from_cache(key, example)
                if cached is not None:
                    outcomes[key] = cached
                else:
                    todo[key] = example
            queue: asyncio.Queue[tuple[str, Example]] = asyncio.Queue()
            for item in todo.items():
                queue.put_nowait(item)
            done = 0

            async def worker() -> None:
                nonlocal done
                while True:
                    try:
                        key, example = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    outcomes[key] = await run.ask(key, example)
                    done += 1
                    if progress is not None:
                        progress(done, len(todo))

            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(options.concurrency, len(todo))):
                        group.create_task(worker())
            except* TeacherFatal as group_error:
                raise group_error.exceptions[0] from None

    out: list[Example] = []
    rejects: list[dict[str, Any]] = []
    for example, key in zip(examples, keys, strict=True):
        if key is None:
            out.append(example)
            continue
        # A text that repeats was asked once; each copy is still its own example in the output.
        outcome = outcomes[key]
        if outcome.rationale is not None:
            out.append(replace(example, rationale=outcome.rationale))
        else:
            if outcome.kind in TEACHER_FAILURES or (outcome.kind or "").startswith("http_"):
                summary.failed += 1
            else:
                summary.rejected += 1
            summary.reject_kinds[outcome.kind or "rejected"] += 1
            rejects.append({**example.to_dict(), "reject_kind": outcome.kind, "reason": outcome.reason,
                            "last_answer": outcome.last_answer})  # fmt: skip
    summary.cached = sum(1 for key in keys if key is not None and key not in todo)
    summary.written = len(out)
    return RationaleResult(out, rejects, summary)


def default_cache_path(out: Path) -> Path:
    return out.with_name(out.name + ".cache.jsonl")


def default_rejects_path(out: Path) -> Path:
    name = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(name + ".rejects.jsonl")


def run_rationales(
    in_path: str | Path,
    out_path: str | Path,
    teacher_config: TeacherConfig,
    options: RationaleOptions = RationaleOptions(),
    *,
    cache_path: str | Path | None = None,
    rejects_path: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RationaleSummary:
    """Read examples, get their rationales, write the output and the rejects (atomically)."""
    options.check()
    out_path = Path(out_path)
    examples = read_examples(in_path)
    if options.limit is not None:
        examples = examples[: options.limit]
    started = time.monotonic()
    result = asyncio.run(
        generate_rationales(
            examples, teacher_config, options, cache_path or default_cache_path(out_path), progress=progress
        )
    )
    write_examples(out_path, result.examples)
    rejects = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.rejects).encode("utf-8")
    write_atomic(Path(rejects_path) if rejects_path else default_rejects_path(out_path), rejects)
    result.summary.seconds = round(time.monotonic() - started, 3)
    return result.summary


__all__ = [
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "RationaleCache",
    "RationaleOptions",
    "RationaleResult",
    "RationaleSummary",
    "TeacherConfig",
    "TeacherError",
    "TeacherFatal",
    "build_messages",
    "cache_key",
    "chat_completions_url",
    "generate_rationales",
    "parse_retry_after",
    "run_rationales",
]
