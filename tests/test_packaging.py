"""The install and CI promises of the README hold."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from promptgate.server.config import ServerConfig

from .support import REPO


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    [command] = re.findall(r"^TEST_COMMAND='(.*)'$", ci, flags=re.M)
    assert f"\n{command}\n" in readme()


def test_every_server_setting_is_documented() -> None:
    text = readme()
    missing = [
        f.name
        for f in dataclasses.fields(ServerConfig)
        if f"PROMPTGATE_{f.name.upper()}" not in text
        # Secret settings are environment variables only: a flag would show in `ps`.
        or (not f.metadata.get("secret") and f"--{f.name.replace('_', '-')}" not in text)
    ]
    assert not missing, f"README lacks these settings: {missing}"


def test_one_namespace_over_three_folders() -> None:
    import promptgate
    import promptgate.client
    import promptgate.server
    import promptgate.trainer

    roots = {p.split("/")[-2] for p in promptgate.__path__}
    assert {"client", "server", "trainer"} <= roots
    assert not (REPO / "client" / "promptgate" / "__init__.py").exists()


def test_base_install_is_the_client_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "torch" not in base and "transformers" not in base
    assert {"server", "vllm", "vllm-cpu", "train", "dev"} <= set(project["optional-dependencies"])
    assert project["scripts"]["promptgate"] == "promptgate.cli:main"


def test_wheel_merges_the_three_folders_into_one_namespace(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(REPO)], check=True, timeout=300)
    [wheel] = tmp_path.glob("promptgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "promptgate/cli.py",
        "promptgate/client/__init__.py",
        "promptgate/v1/classifier_pb2.py",
        "promptgate/v1/classifier_pb2.pyi",
        "promptgate/server/app.py",
        "promptgate/profiles/qwen3.jinja",
        "promptgate/trainer/tiny_model.py",
    ):
        assert module in names, module
    assert "promptgate/__init__.py" not in names  # a PEP 420 namespace, as in the source tree
    assert not any(n.startswith(("tests/", "client/", "server/", "trainer/")) for n in names)


def test_the_command_line_loads_without_the_heavy_extras() -> None:
    """`promptgate --help` (hence `classify`, `screen`) works on a client-only install: every
    subcommand registers without importing yaml, numpy, torch, TRL or the engines."""
    import subprocess
    import sys

    blocked = ["yaml", "numpy", "torch", "transformers", "trl", "datasets", "httpx", "vllm", "structlog"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from promptgate.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("serve", "classify", "health", "screen", "data", "train", "eval"):
        assert command in done.stdout


def test_the_client_commands_stand_alone() -> None:
    """With the server and trainer parts unimportable, `promptgate` still offers the client's
    commands and only those: the command line is assembled from what each part registers."""
    code = (
        "import sys\n"
        "for name in ('promptgate.server', 'promptgate.trainer', 'torch'): sys.modules[name] = None\n"
        "from promptgate.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = re.search(r"\{([a-z,-]+)\}", done.stdout)
    assert listed is not None and listed.group(1).split(",") == ["classify", "info", "health", "screen"]
    assert (
        "--local"
        not in subprocess.run(
            [sys.executable, "-c", code.replace("['--help']", "['screen', '--help']")], capture_output=True, text=True
        ).stdout
    )


def test_registered_parts_are_the_entry_points() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["promptgate.commands"] == {
        "server": "promptgate.server.commands:register",
        "trainer": "promptgate.trainer.commands:register",
    }
