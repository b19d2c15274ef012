"""One flag vocabulary for every command (docs/cli.md): walks every command's click options.

--report FILE writes a JSON report; --json only prints JSON to stdout; --random N; -q/--quiet and
-v/--verbose on every command that does work; --device auto|cpu|cuda, default auto. Old
spellings are hidden aliases that print a deprecation note and still work.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from fna_deploy.cli import COMMANDS, cli
from fna_deploy.commands.options import DEVICES, renamed
from fna_deploy.commands.progress import Reporter, progress
from fna_deploy.trt import parse_shapes
from fna_deploy.trt.shapes import is_legacy, parse_trtexec_shapes, profile_from_flags

QUERIES = {"info": "prints facts; nothing to show progress of", "plugin path": "prints one path"}


def all_commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    found = {}
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found[f"{name} {sub}"] = command.get_command(ctx, sub)
        else:
            found[name] = command
    return found


COMMAND_NAMES = sorted(all_commands())


def options(command: click.Command, *, hidden: bool = False) -> dict[str, click.Option]:
    out = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.hidden == hidden:
            for decl in param.opts + param.secondary_opts:
                out[decl] = param
    return out


def test_every_command_is_walked():
    assert {"analyze", "bench", "build", "export", "infer", "info", "plugin build", "plugin path", "run", "serve",
            "triton", "verify"} <= set(COMMAND_NAMES)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_vocabulary(name):
    command = all_commands()[name]
    opts = options(command)
    if "--report" in opts:
        report = opts["--report"]
        assert not report.is_flag and report.metavar == "FILE", f"{name} --report must take a FILE"
        assert isinstance(report.type, click.Path) and not report.type.dir_okay
    if "--json" in opts:
        assert opts["--json"].is_flag, f"{name} --json must be a switch (print JSON to stdout); a file is --report FILE"
    if "--random" in opts:
        assert not opts["--random"].is_flag and opts["--random"].metavar == "N", f"{name} --random must take N"
    if "--plot" in opts:
        assert opts["--plot"].metavar == "DIR", f"{name} --plot must name a directory"
    if name not in QUERIES:
        for short, long in (("-q", "--quiet"), ("-v", "--verbose")):
            assert short in opts and long in opts and opts[short] is opts[long], f"{name} lacks {short}/{long}"
            assert opts[long].is_flag
    if "--verbose" in opts:
        assert "-v" in opts, f"{name} --verbose needs -v too"
    if "--quiet" in opts:
        assert "-q" in opts, f"{name} --quiet needs -q too"


@pytest.mark.parametrize("name", [n for n in COMMAND_NAMES if "--device" in options(all_commands()[n])])
def test_device_is_auto_cpu_cuda(name):
    device = options(all_commands()[name])["--device"]
    assert isinstance(device.type, click.Choice) and tuple(device.type.choices) == DEVICES
    assert device.default == "auto"


def test_old_spellings_are_hidden_aliases_that_still_work(tmp_path):
    hidden = {name: options(cmd, hidden=True) for name, cmd in all_commands().items()}
    assert "--json" in hidden["infer"]  # infer --json FILE -> --report FILE
    result = CliRunner().invoke(cli, ["infer", "127.0.0.1:1", "m", "--json", str(tmp_path / "r.json")])
    assert "note: --json is deprecated and goes away in the next release; use --report FILE" in result.output
    assert "cannot reach a Triton server" in result.output and result.exit_code == 2
    result = CliRunner().invoke(cli, ["infer", "127.0.0.1:1", "m", "--random"])
    assert "note: --random without N is deprecated" in result.output
    result = CliRunner().invoke(cli, ["infer", "127.0.0.1:1", "m", "--random", "3", "--batch", "2"])
    assert result.exit_code == 2 and "--random 3 and --batch 2 disagree" in result.output
    assert "--json" not in CliRunner().invoke(cli, ["infer", "--help"]).output


def test_renamed_sets_the_new_parameter_and_the_new_spelling_wins():
    @click.command()
    @click.option("--report", "report_path")
    @renamed("--json", "--report FILE", "report_path")
    def cmd(report_path):
        click.echo(f"report={report_path}")

    runner = CliRunner()
    assert runner.invoke(cmd, ["--json", "a.json"]).output.endswith("report=a.json\n")
    both = runner.invoke(cmd, ["--json", "a.json", "--report", "b.json"]).output
    assert both.endswith("report=b.json\n") and "deprecated" in both
    assert runner.invoke(cmd, []).output == "report=None\n"


def test_infer_help_shows_no_defaults_the_served_config_overrides():
    text = CliRunner().invoke(cli, ["infer", "--help"], terminal_width=200).output
    landmarks = next(line for line in text.splitlines() if line.strip().startswith("--landmarks"))
    assert "default: 64" not in landmarks and "served config" in landmarks
    export_help = CliRunner().invoke(cli, ["export", "--help"], terminal_width=200).output
    assert "[default: 64" in next(line for line in export_help.splitlines() if line.strip().startswith("--landmarks"))


# ------------------------------------------------------------------------------ build --shapes


def test_trtexec_shapes():
    assert parse_trtexec_shapes("images:1x3x224x224,mask:1x197") == {"images": [1, 3, 224, 224], "mask": [1, 197]}
    fixed = profile_from_flags(["images:4x3x224x224"])
    assert fixed == {"images": ([4, 3, 224, 224],) * 3}
    ranged = profile_from_flags(min_shapes=["images:1x3x224x224"], max_shapes=["images:8x3x224x224"])
    assert ranged == {"images": ([1, 3, 224, 224], [8, 3, 224, 224], [8, 3, 224, 224])}  # opt defaults to max
    ranged = profile_from_flags(min_shapes=["images:1x3x64x64"], opt_shapes=["images:4x3x64x64"], max_shapes=["images:8x3x64x64"])
    assert ranged["images"][1] == [4, 3, 64, 64]
    for kwargs, message in (
        ({"shapes": ["images"]}, "expected name:DxDxD"),
        ({"shapes": ["images:1x3xbig"]}, "must be integers separated by x"),
        ({"shapes": ["images:0x3"]}, ">= 1"),
        ({"min_shapes": ["images:1x3"]}, "needs both --min-shapes and --max-shapes"),
        ({"min_shapes": ["images:4x3"], "max_shapes": ["images:2x3"]}, "min <= opt <= max"),
        ({"shapes": ["images:1x3"], "max_shapes": ["images:2x3"], "min_shapes": ["images:1x3"]}, "fixed --shapes and a range"),
    ):
        with pytest.raises(ValueError, match=message):
            profile_from_flags(**kwargs)


def test_old_shapes_spelling_still_parses_with_a_note():
    old = "images:1,3,224,224x4,3,224,224x8,3,224,224"
    assert is_legacy(old) and not is_legacy("images:1x3x224x224,mask:1x197")
    told = []
    profile = profile_from_flags([old], legacy=parse_shapes, on_legacy=lambda: told.append(True))
    assert profile == {"images": ([1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224])} and told == [True]


# ------------------------------------------------------------------------------ progress


def test_progress_in_logs_is_one_line_per_stage_with_elapsed_time(capsys):
    with progress(live=False) as reporter:
        reporter.step("loading the model")
        reporter.step("loading the model")  # the same stage again: no second line
        for i in range(5):
            reporter.bar("probing layers", i, 5)
        reporter("exporting")
        reporter.bar("done", 5, 5)  # a finishing call (bench's) leaves the one "done" line to the reporter
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["loading the model", "probing layers (1 of 5)", "exporting", "done"]
    assert all(line.startswith("[") and line.split("]")[0].strip("[ ").endswith("s") for line in lines)
    float(lines[-1].split("]")[0].strip("[ s"))  # the elapsed time is a number


def test_quiet_progress_prints_nothing(capsys):
    with progress(quiet=True) as reporter:
        reporter.step("loading")
        reporter.bar("probing", 1, 2)
    assert capsys.readouterr() == ("", "")
    assert isinstance(reporter, Reporter) and reporter.quiet
