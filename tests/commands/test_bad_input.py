"""Every command, every parameter, generated bad values, through the CLI's one error boundary.

The cases are not hand-picked: the click commands are walked and each parameter gets bad values
derived from its type (out-of-range numbers, NaN, bad choices, missing / garbage / directory
paths, names with newlines and separators). Each case must end in exit 2 with one ``error:``
line on stderr, no traceback, and no file left behind in the folder it ran in (nor a
/tmp/fna-triton-* folder). New options are covered as soon as they exist.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner

from fna_deploy.cli import COMMANDS, LazyGroup, cli

MODEL = "timm:vit_tiny_patch16_224"
GARBAGE = "garbage.bin"  # random bytes, under every suffix a command may sniff
FOLDER = "a_folder"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes: nothing listens there


URL = f"127.0.0.1:{_closed_port()}"

# a valid start for each command, so that the one bad value is what fails (small and fast)
BASE: dict[str, list[str]] = {
    "analyze": [MODEL, "--resolution", "32", "--random", "1", "--landmarks", "4"],
    "export": [MODEL, "--resolution", "32", "--landmarks", "4", "--no-check", "-q"],
    "verify": [MODEL, "--resolution", "32", "--landmarks", "4", "--random", "1"],
    "bench": [MODEL, "--resolutions", "32", "--landmarks", "4", "--iters", "1", "--backends", "torch"],
    "build": ["model.onnx"],
    "triton": ["model.onnx", "-o", "repo", "--backend", "python"],
    "serve": ["repo_missing"],
    "infer": [URL, "vit"],
    "run": [MODEL, "--resolution", "32", "--landmarks", "4", "--no-bench"],
    "info": [],
    "plugin path": ["-o", FOLDER],
}
# parameters whose bad values would start long legitimate work instead of failing (a compiler run)
SKIP = {("plugin build", "cuda_arch"), ("plugin build", "tensorrt_root"), ("plugin build", "jobs")}
OUTPUT_NAMES = {"output", "report_path", "plot_path", "plot_dir", "log_path", "repository", "outdir", "json_path", "timing_cache"}


def commands() -> Iterator[tuple[str, click.Command]]:
    group = cli
    assert isinstance(group, LazyGroup)
    ctx = click.Context(group)
    for name in sorted(COMMANDS):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in sorted(command.commands):
                yield f"{name} {sub}", command.commands[sub]
        else:
            yield name, command


def bad_values(param: click.Parameter) -> list[str]:
    """Bad values for one parameter, from its click type (and whether it names an output)."""
    kind = param.type
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return []
    if isinstance(kind, click.Choice):
        return ["not-a-choice", ""]
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        values = ["abc"]
        one = 1 if isinstance(kind, click.IntRange) else 1e-3
        if kind.min is not None:
            values.append(str(kind.min - one))
        if kind.max is not None:
            values.append(str(kind.max + one))
        if isinstance(kind, click.FloatRange):
            values += ["nan", "inf"] if kind.max is None else ["nan"]
        return values
    if kind is click.INT:
        return ["abc", "-1", str(2**70)]
    if kind is click.FLOAT:
        return ["abc", "nan", "-1"]
    if isinstance(kind, click.Path):
        is_output = param.name in OUTPUT_NAMES
        if is_output and kind.file_okay:  # an output file: in a missing folder, below a file, or a folder
            return ["no_such_dir/out.x", f"{GARBAGE}/sub", FOLDER]
        if is_output:  # an output folder (created when missing): a file, or below a file
            return [GARBAGE, f"{GARBAGE}/sub"]
        values = ["no_such_file.x", "bad\nname"]
        values.append(GARBAGE if not kind.file_okay else FOLDER)
        if kind.file_okay:
            values.append(GARBAGE)
        return values
    # free text: model specs, names, URLs, lists
    return ["", "bad\nname", "../x/y", "\x00", "timm:", "1,,x"]


def cases() -> Iterator[tuple[str, list[str], str]]:
    for path, command in commands():
        base = BASE.get(path, [])
        positional = [p for p in command.params if isinstance(p, click.Argument)]
        for param in command.params:
            if (path, param.name) in SKIP:
                continue
            for value in bad_values(param):
                if isinstance(param, click.Argument):
                    index = positional.index(param)
                    args = list(base[: len(positional)]) or ["x"] * len(positional)
                    args += ["x"] * (len(positional) - len(args))
                    args[index] = value
                    args += base[len(positional) :]
                else:
                    flag = max(param.opts, key=len)
                    args = [*base, flag, value]
                yield path, args, f"{path} {param.name}={value!r}"


CASES = list(cases())


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _triton_tmp() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "fna-*")))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # this run's temporary folders, apart from others'
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    tmp_path = tmp_path / "cwd"
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FNA_DEPLOY_DEBUG", raising=False)
    (tmp_path / GARBAGE).write_bytes(os.urandom(4096))
    for suffix in (".onnx", ".pt", ".pt2", ".plan", ".safetensors", ".so"):
        (tmp_path / f"garbage{suffix}").write_bytes(os.urandom(512))
    (tmp_path / "model.onnx").write_bytes(os.urandom(512))  # the base artifact of build/triton: garbage too
    (tmp_path / FOLDER).mkdir()
    return tmp_path


def test_every_command_has_cases():
    covered = {path for path, _, _ in CASES}
    assert covered == {path for path, _ in commands()} - {"info"}  # info takes only a flag
    assert len(CASES) > 150


@pytest.mark.parametrize("path, args", [c[:2] for c in CASES], ids=[c[2] for c in CASES])
def test_bad_input_is_one_error_line(path, args, workdir):
    before, tmp_before = _snapshot(workdir), _triton_tmp()
    result = CliRunner().invoke(cli, [*path.split(), *args])
    stderr = result.stderr
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output and "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and stderr.strip().splitlines()[-1] == error_lines[0], stderr
    assert len(error_lines[0]) > len("error: ") + 10
    assert _snapshot(workdir) == before, f"left behind: {_snapshot(workdir) - before}"
    assert _triton_tmp() <= tmp_before


def test_debug_shows_the_traceback(workdir, monkeypatch):
    for args, env in ((["--debug", "export", "garbage.pt2"], None), (["export", "garbage.pt2"], "1")):
        if env:
            monkeypatch.setenv("FNA_DEPLOY_DEBUG", env)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2
        assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error:")


def test_unexpected_errors_name_the_command_and_exit_2(monkeypatch):
    import fna_deploy.commands.info as info_cmd

    def boom(*_args):  # collect(step)
        raise RuntimeError("something broke\nmore detail")

    monkeypatch.setattr(info_cmd, "collect", boom)
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 2
    assert re.fullmatch(r"error: fna-deploy info stopped on an unexpected RuntimeError: something broke; .*--debug.*\n", result.stderr)



def test_resource_errors_are_sentences():
    import errno

    from fna_deploy.cli import as_cli_error

    full = as_cli_error(OSError(errno.ENOSPC, "No space left on device", "out.onnx"))
    assert full.exit_code == 2 and full.format_message() == "no space left on the device writing out.onnx; free some space or write the output elsewhere"
    memory = as_cli_error(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"))
    assert memory.exit_code == 2 and memory.format_message().startswith("ran out of memory; try a smaller --resolution")
    assert as_cli_error(RuntimeError("something else")) is None  # unexpected: the boundary names the command instead
