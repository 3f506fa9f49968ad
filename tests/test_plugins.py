"""Plugins: a distribution installed on the path adds a loss, models and a teacher scheme through
entry points, usable from the command line by name; its checkpoints reload while it is installed;
broken or clashing plugins are one-line errors naming the distribution and the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from kdfiqa.errors import ConfigError
from kdfiqa.registry import PluginError, Registry

ROOT = Path(__file__).resolve().parents[1]

DEMO_FILES = {
    "kdfiqa_demo_plugin/__init__.py": '"""A kdfiqa plugin for the tests."""\n',
    "kdfiqa_demo_plugin/losses.py": """
        import torch
        from torch import nn


        class DemoMSE(nn.Module):
            kind = "task"

            def forward(self, pred, target):
                return (pred.reshape(-1) - target.reshape(-1).to(pred)).pow(2).mean()
    """,
    "kdfiqa_demo_plugin/nets.py": """
        import torch
        from torch import nn


        class DemoNet(nn.Module):
            def __init__(self, width=4, size=32):
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
                self.head = nn.Linear(width, 1)
                self.default_input_size = (3, size, size)

            def forward_logits(self, x):
                return self.head(self.features(x).mean(dim=(2, 3)))

            def forward(self, x):
                return self.forward_logits(x).sigmoid()


        def demo_student(width: int = 4, pretrained: bool = False):
            \"\"\"A factory entry point: registered under the entry point's name.\"\"\"
            return DemoNet(width)
    """,
    "kdfiqa_demo_plugin/zoo.py": """
        from kdfiqa.models import register_model

        from .nets import DemoNet


        @register_model(name="demo_zoo_small", default_input_size=(3, 32, 32))
        def demo_zoo_small(width: int = 4, pretrained: bool = False):
            \"\"\"A model a module entry point registers.\"\"\"
            return DemoNet(width)
    """,
    "kdfiqa_demo_plugin/teachers.py": """
        import torch
        from torch import nn

        from .nets import DemoNet


        class Constant(nn.Module):
            \"\"\"A score source: the same logit for every image of a batch.\"\"\"

            def __init__(self, logit):
                super().__init__()
                self.logit = float(logit)

            def forward(self, batch):
                return torch.full((len(batch["image"]), 1), self.logit)


        def demo(spec, **model_kwargs):
            \"\"\"demo:WIDTH, a network; demo:const=LOGIT, a score source.\"\"\"
            if spec.startswith("const="):
                return Constant(spec[len("const="):])
            torch.manual_seed(0)
            return DemoNet(int(spec or 4))
    """,
}
DEMO_ENTRY_POINTS = {
    "kdfiqa.losses": {"demo_mse": "kdfiqa_demo_plugin.losses:DemoMSE"},
    "kdfiqa.models": {"demo_student": "kdfiqa_demo_plugin.nets:demo_student",
                      "demo_zoo": "kdfiqa_demo_plugin.zoo"},
    "kdfiqa.teachers": {"demo": "kdfiqa_demo_plugin.teachers:demo"},
}


def install(site: Path, dist: str, entry_points: dict[str, dict[str, str]],
            files: dict[str, str] | None = None) -> Path:
    """Put distribution ``dist`` (its files and a ``.dist-info`` with its entry points) in ``site``:
    what an installed distribution is on ``sys.path``."""
    for name, text in (files or {}).items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in entry_points.items()))
    return site


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory) -> Path:
    return install(tmp_path_factory.mktemp("site"), "kdfiqa_demo_plugin", DEMO_ENTRY_POINTS, DEMO_FILES)


def kdfiqa(site: Path | None, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run the command line in a fresh process, with ``site`` (if any) on its path."""
    path = [str(ROOT), *([str(site)] if site else []), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


# ------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_plugin_models_losses_and_teachers_work_from_the_command_line(demo_site, tmp_path):
    listed = kdfiqa(demo_site, "models", "demo_*", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["demo_student", "demo_zoo_small"]

    budget = kdfiqa(demo_site, "budget", "demo_student", "--json", cwd=tmp_path)
    assert budget.returncode == 0, budget.stderr
    assert json.loads(budget.stdout)["results"][0]["params"] == 3 * 4 * 9 + 4 + 4 + 1

    from kdfiqa.data import make_synthetic_fiqa

    data = make_synthetic_fiqa(tmp_path / "data", 20, size=40, seed=0)
    run = tmp_path / "run"
    distilled = kdfiqa(demo_site, "distill", "--model", "demo_zoo_small", "--set", "model.kwargs.width=3",
                       "--teacher", "demo:6", "--task-loss", "1.0*demo_mse", "--root", data.image_dir,
                       "--csv", data.labels, "--device", "cpu", "--quiet", "--epochs", "1", "--batch-size", "8",
                       "--val-fraction", "0.2", "--out", run, cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    log = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert "demo_mse" in json.dumps(log["train"])

    # the plugin model's checkpoint (with a replayed keyword argument) reloads while it is installed ...
    reloaded = kdfiqa(demo_site, "budget", run / "best.pt", "--json", cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout)["results"][0]["params"] == 3 * 3 * 9 + 3 + 3 + 1
    # ... and is a one-line error without it
    missing = kdfiqa(None, "budget", run / "best.pt", cwd=tmp_path)
    assert missing.returncode == 2 and "demo_zoo_small" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ in process


@pytest.fixture
def on_path(demo_site, monkeypatch) -> Path:
    """The demo plugin on the path, and a teacher-scheme table that has not looked for plugins yet
    (this process's may have, before the plugin was there)."""
    import kdfiqa.targets

    monkeypatch.syspath_prepend(str(demo_site))
    schemes = Registry("teacher scheme", group=kdfiqa.targets.TEACHERS_GROUP)
    schemes.register(kdfiqa.targets.TEACHER_SCHEMES.get("timm"), name="timm")
    monkeypatch.setattr(kdfiqa.targets, "TEACHER_SCHEMES", schemes)
    return demo_site


def test_teacher_schemes_give_networks_and_score_sources(on_path):
    import kdfiqa.targets
    from kdfiqa.distill import Teacher
    from kdfiqa.distill.teacher import NetworkTeacher
    from kdfiqa.targets import load_target

    assert kdfiqa.targets.TEACHER_SCHEMES.list() == ["demo", "timm"]
    network = Teacher("demo:5")
    assert isinstance(network.members[0], NetworkTeacher) and network.input_size == (3, 32, 32)
    assert load_target("demo:5").head.in_features == 5
    batch = {"image": torch.zeros(3, 3, 32, 32)}
    assert torch.equal(Teacher("demo:const=0.5")(batch), torch.full((3, 1), 0.5))  # used as it is
    mean = torch.tensor([0.5, 1.5]).sigmoid().mean().logit()
    assert torch.allclose(Teacher(["demo:const=0.5", "demo:const=1.5"])(batch), mean.expand(3, 1), atol=1e-5)


def test_an_unknown_scheme_is_still_a_module_factory(on_path, tmp_path):
    from kdfiqa.targets import load_target

    factory = tmp_path / "nets_here.py"
    factory.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(2, 1)\n")
    assert isinstance(load_target(f"{factory}:build"), nn.Linear)


def widgets(group: str, **builtins: object) -> Registry:
    reg: Registry[object] = Registry("widget", group=group)
    for name, value in builtins.items():
        reg.register(value, name=name)
    return reg


def test_plugins_load_lazily_once_when_a_name_is_missing_or_listed(tmp_path, monkeypatch):
    install(tmp_path, "widget_pack", {"kdfiqa_test.widgets": {"gamma": "widget_pack_mod:GAMMA"}},
            {"widget_pack_mod.py": "GAMMA = 3\nLOADS = []\nLOADS.append(1)\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = widgets("kdfiqa_test.widgets", alpha=1)
    assert reg.get("alpha") == 1 and "widget_pack_mod" not in sys.modules  # a built-in: nothing loaded
    assert reg.get("gamma") == 3 and reg.list() == ["alpha", "gamma"] and "gamma" in reg
    assert sys.modules["widget_pack_mod"].LOADS == [1]
    monkeypatch.delitem(sys.modules, "widget_pack_mod")
    fresh = widgets("kdfiqa_test.widgets")
    assert list(fresh) == ["gamma"]  # listing loads too


@pytest.mark.parametrize("value, reason", [
    ("widget_missing_mod:THING", "ModuleNotFoundError: No module named 'widget_missing_mod'"),
    ("widget_raising_mod:THING", "RuntimeError: boom"),
    ("widget_raising_mod", "RuntimeError: boom"),
])
def test_a_plugin_that_fails_to_import_is_one_line_naming_it(tmp_path, monkeypatch, value, reason):
    install(tmp_path, "broken_pack", {"kdfiqa_test.broken": {"thing": value}},
            {"widget_raising_mod.py": "raise RuntimeError('boom\\nsecond line')\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "widget_raising_mod", raising=False)
    reg = widgets("kdfiqa_test.broken", alpha=1)
    assert reg.get("alpha") == 1
    with pytest.raises(PluginError) as info:
        reg.get("thing")
    assert str(info.value) == (f"plugin broken_pack (entry point kdfiqa_test.broken: thing = {value}) failed to "
                               f"load: {reason}; fix the plugin or pip uninstall broken_pack")
    assert isinstance(info.value, ConfigError)


def test_a_plugin_name_clashing_with_a_built_in_is_refused(tmp_path, monkeypatch):
    install(tmp_path, "clash_pack", {"kdfiqa_test.clash": {"alpha": "clash_pack_mod:ALPHA"}},
            {"clash_pack_mod.py": "ALPHA = 99\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = widgets("kdfiqa_test.clash", alpha=1)
    with pytest.raises(PluginError, match=r"^plugin clash_pack \(entry point kdfiqa_test\.clash: alpha = "
                                          r"clash_pack_mod:ALPHA\): registers widget 'alpha', which kdfiqa "
                                          r"already has; rename it in the plugin \(or pip uninstall clash_pack\)$"):
        reg.list()
    assert reg.get("alpha") == 1


def test_plugin_objects_of_the_wrong_kind_are_refused(tmp_path, monkeypatch):
    from kdfiqa.losses.registry import LOSSES_GROUP, _adopt as adopt_loss
    from kdfiqa.models.registry import MODELS_GROUP, _adopt as adopt_model

    install(tmp_path, "wrong_pack", {LOSSES_GROUP: {"notaloss": "wrong_pack_mod:NOT_A_LOSS"},
                                     MODELS_GROUP: {"emo2_1m": "wrong_pack_mod:factory"}},
            {"wrong_pack_mod.py": "NOT_A_LOSS = 3\n\ndef factory():\n    pass\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    losses = Registry("loss", plural="losses", group=LOSSES_GROUP, adopt=adopt_loss)
    with pytest.raises(PluginError, match=r"notaloss = wrong_pack_mod:NOT_A_LOSS\) failed to load: TypeError: 3 is "
                                          r"not a loss class"):
        losses.get("notaloss")
    models = Registry("model", group=MODELS_GROUP, adopt=adopt_model)
    with pytest.raises(PluginError, match=r"failed to load: ValueError: model 'emo2_1m' is already registered as "
                                          r"a backbone"):
        models.list()
