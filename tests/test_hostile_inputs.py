"""A hostile-input suite, built at run time (no binary fixtures): damaged images and CSVs, hostile
configs and checkpoints, bad flags and output paths, each run through the command line.

Every case must end *clean*: the expected exit status with one line on stderr naming what is wrong
(or success where the input is fine), never a traceback (*crash*), never success on bad input
(*silent*), never code from a file run (*code ran*), and never a file the user had changed (*lost*).
The README's reliability section states the figure this suite measures; the last test checks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.models import create_model
from tiny_fiqa import TINY, synthetic

README = Path(__file__).resolve().parent.parent / "README.md"


class Payload:
    """Unpickling this would create ``marker``: proof that code from a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@dataclass
class Case:
    name: str
    argv: Callable[["Workspace"], list]
    status: int = 2
    needle: str = ""
    setup: Callable[["Workspace"], None] = field(default=lambda ws: None)


class Workspace:
    """Tiny labeled data, a finished run (whose files must never change) and a scratch folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images, self.labels = synthetic(root, 24, 0, "labeled")
        self.marker = root / "code_ran"
        self.run = root / "finished"
        torch.manual_seed(0)
        model = create_model(TINY)
        self.checkpoint = save_checkpoint(self.run / "best.pt", build_checkpoint(model))
        shutil.copy(self.checkpoint, self.run / "last.pt")
        self.scratch = root / "scratch"

    def csv(self, text: str, name: str = "labels.csv") -> Path:
        path = self.scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def names(self) -> list[str]:
        return sorted(p.name for p in self.images.iterdir())

    def protected(self) -> dict[str, str]:
        files = [*self.run.iterdir(), self.labels, *self.images.iterdir()]
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def _train(ws: Workspace, *extra) -> list:
    return ["train", "--model", TINY, "--root", ws.images, "--csv", ws.labels, "--device", "cpu", "--quiet",
            "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25", "--out", ws.scratch / "run", *extra]


def _labels(ws: Workspace, text: str) -> list:
    return ["train", "--model", TINY, "--root", ws.images, "--csv", ws.csv(text), "--device", "cpu", "--quiet",
            "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.25", "--out", ws.scratch / "run"]


def _damage_image(kind: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        folder = ws.scratch / "images"
        shutil.copytree(ws.images, folder, dirs_exist_ok=True)
        victim = sorted(folder.iterdir())[0]
        data = victim.read_bytes()
        victim.write_bytes({"truncated": data[:60], "empty": b"", "text": b"hello, not an image",
                            "junk": bytes(range(256)) * 8}[kind])
    return setup


def _checkpoint(kind: str) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        path = ws.scratch / "bad.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        good = build_checkpoint(create_model(TINY))
        if kind == "pickle":
            torch.save({**good, "x": Payload(ws.marker)}, path)
        elif kind == "random":
            path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                           dtype=torch.uint8).numpy().tobytes())
        elif kind == "bare":
            torch.save(create_model(TINY).state_dict(), path)
        elif kind == "kwargs":
            good["model"]["kwargs"] = {"checkpoint_path": str(ws.marker)}
            torch.save(good, path)
        elif kind == "nan":
            model = create_model(TINY)
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))
            torch.save(build_checkpoint(model), path)
        elif kind == "format":
            torch.save({**good, "format": "kdfiqa.checkpoint.v0"}, path)
        elif kind == "deploy transform":
            good["model"]["deploy"]["eval_transform"] = {"preset": "bogus"}
            torch.save(good, path)
        elif kind == "deploy size":
            good["model"]["deploy"]["input_size"] = [3, -5, 32]
            torch.save(good, path)
    return setup


def _stored_config(kind: str) -> Callable[[Workspace], None]:
    """A checkpoint (``bad.pt``, and the scratch run's ``last.pt``) whose stored run config is hostile."""
    def setup(ws: Workspace) -> None:
        from kdfiqa.config import RunConfig

        config = RunConfig().to_dict()
        config["model"]["name"] = TINY
        if kind == "transform":
            config["data"]["eval_transform"] = {"preset": "bogus"}
        elif kind == "size":
            config["model"]["input"] = -3
        elif kind == "model file":
            config["model"]["name"] = str(ws.scratch / "model.yaml")
        elif kind == "type":
            config["train"]["epochs"] = "many"
        ckpt = build_checkpoint(create_model(TINY), config=config)
        save_checkpoint(ws.scratch / "bad.pt", ckpt)
        save_checkpoint(ws.scratch / "run" / "last.pt", ckpt)
    return setup


def _billion_laughs(ws: Workspace) -> None:
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    ws.csv("\n".join(levels) + "\n", "laughs.yaml")


CASES = [
    # images
    *[Case(f"image {kind}", lambda ws: _labels(ws, ws.labels.read_text())[:4] + [ws.scratch / "images"]
           + _labels(ws, ws.labels.read_text())[5:], needle="image", setup=_damage_image(kind))
      for kind in ("truncated", "empty", "text", "junk")],
    # label files
    Case("csv nan score", lambda ws: _labels(ws, "".join(f"{n},nan\n" for n in ws.names())), needle="line 1"),
    Case("csv score above 1", lambda ws: _labels(ws, "".join(f"{n},1.5\n" for n in ws.names())), needle="line 1"),
    Case("csv three fields", lambda ws: _labels(ws, "".join(f"{n},0.5,x\n" for n in ws.names())), needle="fields"),
    Case("csv duplicate name", lambda ws: _labels(ws, "".join(f"{n},0.5\n" for n in ws.names() + ws.names()[:1])),
         needle="duplicate"),
    Case("csv two spellings", lambda ws: _labels(ws, "".join(f"{n},0.5\n" for n in ws.names())
                                                 + f"{ws.names()[0][:-4]},0.9\n"), needle="same file"),
    Case("csv outside root", lambda ws: _labels(ws, "../../etc/passwd,0.5\n" + "".join(f"{n},0.5\n" for n in ws.names())),
         needle="--allow-outside-root"),
    Case("csv empty", lambda ws: _labels(ws, ""), needle="no rows"),
    Case("csv header only", lambda ws: _labels(ws, "image,score\n"), needle="header only"),
    Case("csv missing image", lambda ws: _labels(ws, "ghost.png,0.5\n" + "".join(f"{n},0.5\n" for n in ws.names())),
         needle="ghost"),
    Case("csv binary", lambda ws: _labels(ws, "\x00\x01\x02,\x03\n" * 5), needle="labels.csv"),
    # configs
    Case("yaml billion laughs", lambda ws: [*_train(ws), "--config", ws.scratch / "laughs.yaml"], needle="aliases",
         setup=_billion_laughs),
    Case("yaml recursive alias", lambda ws: [*_train(ws), "--config", ws.csv("model: &a\n  kwargs: *a\n", "r.yaml")],
         needle="alias"),
    Case("yaml unknown key", lambda ws: [*_train(ws), "--config", ws.csv("train:\n  lrr: 1\n", "u.yaml")],
         needle="u.yaml:2"),
    Case("yaml wrong type", lambda ws: [*_train(ws), "--config", ws.csv("train:\n  epochs: many\n", "t.yaml")],
         needle="t.yaml:2"),
    Case("yaml not a mapping", lambda ws: [*_train(ws), "--config", ws.csv("- a\n- b\n", "l.yaml")], needle="mapping"),
    Case("set bad value", lambda ws: [*_train(ws), "--set", "train.lr=[1, 2"], needle="--set"),
    # flags
    *[Case(f"flag {flag} {value}", lambda ws, flag=flag, value=value: [*_train(ws), flag, value], needle=flag)
      for flag, value in (("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--epochs", "0"),
                          ("--batch-size", "-4"), ("--val-fraction", "1.5"), ("--input", "0"),
                          ("--weight-decay", "nan"))],
    # checkpoints
    Case("checkpoint pickle payload", lambda ws: ["evaluate", ws.scratch / "bad.pt", "--root", ws.images, "--csv",
                                                  ws.labels, "--device", "cpu"], needle="pickled",
         setup=_checkpoint("pickle")),
    *[Case(f"checkpoint {kind}", lambda ws: ["predict", ws.scratch / "bad.pt", ws.images, "--out", ws.scratch / "s.csv",
                                             "--device", "cpu"], needle=needle, setup=_checkpoint(kind))
      for kind, needle in (("random", "bad.pt"), ("bare", "bare state_dict"), ("kwargs", "checkpoint_path"),
                           ("nan", "non-finite"), ("format", "format"),
                           ("deploy transform", "model.deploy: deploy config of"), ("deploy size", "input_size"))],
    # pseudo-label files read back (as `kdfiqa pseudo-label` writes them: image,score)
    *[Case(f"pseudo csv {kind}", lambda ws, rows=rows: [
        "distill", *_train(ws)[1:], "--teacher", ws.checkpoint, "--pseudo-csv",
        ws.csv("image,score\n" + "".join(f"{n},{s}\n" for n, s in rows(ws)), "pseudo.csv"), "--pseudo-root",
        ws.images], needle=needle)
      for kind, rows, needle in (
          ("nan score", lambda ws: [(ws.names()[0], "nan")] + [(n, 0.5) for n in ws.names()[1:]], "pseudo.csv line 2"),
          ("score below 0", lambda ws: [(n, -0.5) for n in ws.names()], "pseudo.csv line 2"),
          ("duplicate name", lambda ws: [(n, 0.5) for n in ws.names() + ws.names()[:1]], "duplicate"),
          ("empty name", lambda ws: [("", 0.5)] + [(n, 0.5) for n in ws.names()], "empty image name"))],
    # the run config a checkpoint stores, reused by --config CKPT and --resume
    *[Case(f"stored config {kind} via --config", lambda ws: [*_train(ws), "--config", ws.scratch / "bad.pt"],
           needle=needle, setup=_stored_config(kind))
      for kind, needle in (("transform", "bad.pt (its stored run config): data.eval_transform"),
                           ("size", "bad.pt (its stored run config): model.input"),
                           ("model file", "names a model file"),
                           ("type", "bad.pt (its stored run config): train.epochs"))],
    Case("stored config bogus transform via --self-train", lambda ws: [
        "distill", *_train(ws)[1:-1], ws.scratch / "student", "--teacher", ws.scratch / "bad.pt", "--unlabeled",
        ws.scratch / "unlabeled" / "images", "--self-train", "1"],
         needle="bad.pt (its stored run config): data.eval_transform",
         setup=lambda ws: (_stored_config("transform")(ws), synthetic(ws.scratch, 4, 1, "unlabeled"))),
    Case("--config of a checkpoint that stores no run config", lambda ws: [*_train(ws), "--config", ws.checkpoint],
         needle="stores no run configuration"),
    Case("stored config bogus transform via --resume", lambda ws: [*_train(ws), "--resume"],
         needle="last.pt (its stored run config): data.eval_transform", setup=_stored_config("transform")),
    Case("resume last.pt is a folder", lambda ws: [*_train(ws), "--resume"], needle="no last.pt file",
         setup=lambda ws: (ws.scratch / "run" / "last.pt").mkdir(parents=True)),
    # output paths
    Case("out is a file", lambda ws: [*_train(ws)[:-1], ws.labels], needle="where a folder is expected"),
    Case("train into a finished run", lambda ws: [*_train(ws)[:-1], ws.run], needle="--resume"),
    Case("distill into the teacher's folder", lambda ws: ["distill", *_train(ws)[1:-1], ws.run, "--teacher",
                                                          ws.checkpoint], needle="--out"),
    Case("predict onto the checkpoint", lambda ws: ["predict", ws.checkpoint, ws.images, "--out", ws.checkpoint,
                                                    "--device", "cpu"], needle="input"),
    Case("predict into a folder", lambda ws: ["predict", ws.checkpoint, ws.images, "--out", ws.run,
                                              "--device", "cpu"], needle="folder"),
    Case("pseudo-label onto the labels", lambda ws: ["pseudo-label", "--teacher", ws.checkpoint, "--images", ws.images,
                                                     "--out", ws.labels], needle="--out"),
    Case("export onto the input", lambda ws: ["export", ws.run / f"{TINY}.pt", "--out", ws.run, "--format",
                                              "torchscript", "--budget", "none"], needle="input",
         setup=lambda ws: shutil.copy(ws.checkpoint, ws.run / f"{TINY}.pt")),
    # the same inputs, sound: these must succeed
    Case("sound run", lambda ws: _train(ws), status=0),
    Case("sound predict", lambda ws: ["predict", ws.checkpoint, ws.images, "--out", ws.scratch / "ok.csv",
                                      "--device", "cpu"], status=0),
]


def _run(argv: list) -> tuple[int | None, BaseException | None, str]:
    """(exit status, exception that escaped main, stderr) of one command line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return main([str(a) for a in argv]), None, err.getvalue()
        except SystemExit as exc:  # argparse's own refusal of a flag
            return exc.code, None, err.getvalue()
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a crash
            return None, exc, err.getvalue()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    """Each case's outcome: clean, crash, silent, code ran or lost (with what was seen)."""
    results = {}
    for case in CASES:
        ws = Workspace(tmp_path_factory.mktemp("hostile"))
        case.setup(ws)
        before = ws.protected()
        code, escaped, err = _run(case.argv(ws))
        if ws.marker.exists():
            results[case.name] = "code ran"
        elif escaped is not None or "Traceback" in err:
            results[case.name] = f"crash ({escaped!r})"
        elif ws.protected() != before:
            results[case.name] = "lost"
        elif code != case.status:
            results[case.name] = f"silent (exit {code}: {err.strip()[:200]})"
        elif case.status == 2 and (case.needle not in err or len(err.strip().splitlines()) > 3):
            results[case.name] = f"unclear ({err.strip()[:300]!r})"
        else:
            results[case.name] = "clean"
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_case_is_clean(outcomes, name):
    assert outcomes[name] == "clean", outcomes[name]


def figure(outcomes: dict[str, str]) -> str:
    counts = {kind: sum(o.startswith(kind) for o in outcomes.values())
              for kind in ("clean", "crash", "silent", "code ran", "lost")}
    return (f"{len(outcomes)} tried, {counts['clean']} clean, {counts['crash']} crash, {counts['silent']} silent, "
            f"{counts['code ran']} code ran, {counts['lost']} lost")


def test_the_readme_states_the_measured_figure(outcomes):
    stated = re.search(r"\d+ tried, \d+ clean, \d+ crash, \d+ silent, \d+ code ran, \d+ lost", README.read_text())
    assert stated is not None and stated.group(0) == figure(outcomes), figure(outcomes)


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_keeps_nothing_half_written(tmp_path):
    """Under ``ulimit -f`` a checkpoint write fails: one line naming the file, exit 2, no partial file."""
    import resource
    import subprocess
    import sys

    images, labels = synthetic(tmp_path, 24, 0, "labeled")
    out = tmp_path / "run"
    script = ("import sys, tiny_fiqa; from kdfiqa.cli.main import main; sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", script, "train", "--model", TINY, "--root", str(images), "--csv", str(labels),
            "--device", "cpu", "--quiet", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.25",
            "--set", "model.kwargs.width=64", "--out", str(out)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          cwd=Path(__file__).resolve().parent)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be written" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not [p for p in out.glob("*.pt")] and not [p for p in out.glob(".*.tmp")]


def test_library_errors_become_one_line_with_the_path_and_what_to_do():
    import errno

    from kdfiqa.errors import DataError, user_message

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/last.pt")
    assert user_message(full).startswith("/runs/x/last.pt: No space left on device; the disk is full")
    denied = PermissionError(errno.EACCES, "Permission denied", "/runs/ro")
    assert "not writable" in user_message(denied) and "/runs/ro" in user_message(denied)
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\nkdfiqa.errors.DataError: a.png: truncated image")
    assert user_message(wrapped) == "a.png: truncated image"
    assert "--debug" in user_message(TypeError("bad"))


# ------------------------------------------------------------------ torchrun, search files, the demo's folder


@pytest.mark.slow  # two ranks, each a fresh interpreter
def test_torchrun_one_bad_label_is_one_line_and_status_2_on_every_rank(tmp_path):
    """A NaN label under two ranks: one line in total (rank 0's), both ranks exit 2, no gloo noise."""
    from test_rank_failure import CLI, _lines, ranks

    images, labels = synthetic(tmp_path, 12, 0, "labeled")
    bad = tmp_path / "nan.csv"
    rows = labels.read_text().splitlines()
    bad.write_text("\n".join([*rows[:-1], rows[-1].rsplit(",", 1)[0] + ",nan"]) + "\n")
    argv = ["train", "--model", TINY, "--root", str(images), "--csv", str(bad), "--device", "cpu", "--quiet",
            "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.3", "--out", str(tmp_path / "run")]
    statuses, errs, seconds = ranks(["-c", CLI, *argv])
    lines = _lines(errs)
    assert statuses == [2, 2] and len(lines) == 1 and "nan.csv" in errs[0], (statuses, errs)
    assert "Traceback" not in "".join(errs) and "Connection closed" not in "".join(errs) and seconds < 300


@pytest.mark.slow  # one small search
def test_search_files_state_the_size_their_figures_were_counted_at(tmp_path):
    """Searched at 32x32 against vquala2025 (deployed at 224x224), a file's figures are the 224x224
    count, and its comment says so; re-counted here at 224x224 they are the same."""
    from kdfiqa.budget import measure
    from kdfiqa.targets import load_target

    out = tmp_path / "students"
    assert main(["search", "--trials", "2", "--input", "32", "--no-latency", "--seed", "0", "--out", str(out)]) == 0
    files = sorted(out.glob("*.yaml"))
    assert files
    for path in files:
        head = path.read_text().splitlines()[:3]
        figures = re.search(r"([\d,]+) params, ([\d.]+) GFLOPs at (\S+), the budget's deployment size \(input 32x32\)",
                            " ".join(head))
        assert figures is not None, head
        assert figures.group(3) == "224x224"
        report = measure(load_target(path), 224)
        assert int(figures.group(1).replace(",", "")) == report.params
        assert float(figures.group(2)) == pytest.approx(report.gflops, abs=1e-4)
        assert "input:\n- 32\n- 32" in path.read_text() or "input: [32, 32]" in path.read_text()


def test_a_second_demo_into_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    """Another process holds the demo folder's writer lock (as a running demo does): ``kdfiqa demo``
    into it is refused with one line naming that pid, and writes nothing there."""
    from test_concurrent_writers import Holder

    out = tmp_path / "demo"
    holder = Holder(f"{out}{os.sep}")
    try:
        before = sorted(p.name for p in out.iterdir())
        status = main(["demo", "--quick", "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1 and f"pid {holder.pid}" in err[0] and str(out) in err[0], err
        assert sorted(p.name for p in out.iterdir()) == before  # only the holder's lock file
    finally:
        holder.process.kill()
        holder.process.wait()
