"""Property test: random flags and random YAML config files never crash the command line; every run
ends with status 0 (``--print-config``) or 2 (one line naming the fault), never a traceback."""

from __future__ import annotations

import contextlib
import io

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdfiqa.cli.main import main

FLAGS = ["--model", "--input", "--root", "--csv", "--val-fraction", "--epochs", "--batch-size", "--lr",
         "--weight-decay", "--optimizer", "--scheduler", "--amp", "--ema", "--seed", "--device", "--workers",
         "--task-loss", "--teacher", "--teacher-input", "--distill-loss", "--feature-loss", "--budget",
         "--deploy-input", "--self-train", "--view-cache", "--samples-per-epoch", "--patience", "--set",
         "--recipe", "--sampler"]
VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "3", "1e400", "0.5", "224", "224x336", "0x0", "abc", "", "none",
          "emo2_1m", "timm:x", "mse", "1.0*mse + 0.5*plcc", "2*", "a:b", "a:b:c:d", "vquala2025", "ssus",
          "train.lr=1", "train.lr=[", "data.train_transform={mode: zoom}", "x" * 300, "../..", "ders", "🙂"]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


@SETTINGS
@given(command=st.sampled_from(["train", "distill"]),
       pairs=st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(VALUES)), max_size=6))
def test_random_flags_never_crash(command, pairs):
    argv = [command, *[item for pair in pairs for item in pair], "--print-config"]
    code, err = _run(argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert err.strip() and len(err.strip().splitlines()) == 1, (argv, err)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                    max_leaves=12)
SECTIONS = st.dictionaries(st.sampled_from(["model", "data", "train", "loss", "distill", "ssar", "commands",
                                            "description", "bogus"]), DOCS, max_size=4)


@SETTINGS
@given(doc=st.one_of(SECTIONS, DOCS), raw=st.booleans(), text=st.text(max_size=80))
def test_random_config_files_never_crash(tmp_path_factory, doc, raw, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text if raw else yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code, err = _run(["train", "--config", str(path), "--print-config"])
    assert code in (0, 2), (path.read_text(), code, err)
    assert "Traceback" not in err, err
