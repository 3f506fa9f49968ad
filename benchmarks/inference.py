"""Student inference speed: images/s of every registered student and two timm peers, five ways.

For each model, resolution (224, 288) and batch size (1, 64), the same random batch runs through

* ``eager``: the model in eval mode under ``torch.inference_mode`` (the training form);
* ``fused``: its inference form, :func:`kdfiqa.models.fuse` (batch norms folded into the
  convolutions, activations in place, channels-last weights), the form ``kdfiqa predict`` uses;
* ``channels_last``: the same with weights and input in channels-last memory format;
* ``compile``: ``torch.compile`` (inductor) of the eager model, compile time excluded (the default
  student and the peers at 224 only, and in quick mode at the largest batch only: compiling takes
  a minute or more per model and shape on a small CPU);
* ``onnxruntime``: the model exported by :func:`kdfiqa.export.export_onnx` (legacy exporter,
  dynamic batch, height and width) and run by onnxruntime's CPU provider with as many threads as torch uses, its idle
  threads not spinning (they would take the cores of the contender timed next).

Efficiency is the achieved rate of multiply-adds: images/s x fvcore GMACs per image (fvcore's
"GFLOPs" count multiply-adds), compared with the fp32 GEMM rate measured in the same run. For the
default student and the peers, ``torch.profiler`` splits one eager pass into operator groups
(:func:`op_breakdown`), which shows where a gap in that rate comes from.

Goal (issue 7): the default student (EMOv2-1M, the seed's student) delivers at least the peers'
images/s per GFLOP, i.e. the same achieved multiply-add rate, eager at 224 and the largest batch
(64; 16 in quick mode, which also runs 224 only).

Goals (issue 16), on the EMOv2-1M backbone as published (1000-class head), at 224 and batch 1 and
64 in both modes, all contenders interleaved in one run (row ``EMOv2-1M (1000 classes)``): the
inference form runs at least 1.5x as fast as the official EMOv2 code eager, and ONNX Runtime at least
2x as fast as kdfiqa eager. The official code is never part of kdfiqa: it runs only when the
environment variable ``KDFIQA_OFFICIAL_EMOV2`` names a checkout of github.com/zhangzjn/EMOv2
(``model/lib_emo/emo2.py`` is imported from there, with the same weights loaded into it);
otherwise that contender is reported as not run.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from torch.profiler import ProfilerActivity, profile

from kdfiqa.budget import measure
from kdfiqa.models import create_backbone, create_model, fuse, list_models, model_info

from .common import REPO, SHARED_MACHINE_NOTE, gemm_gmacs, interleaved_medians, scratch_dir

TITLE = "Student inference"
DEFAULT_STUDENT = "emo2_1m"
"""The seed's student (EMOv2-1M), the one the goal is about."""
PEERS = ("timm:edgenext_xx_small", "timm:mobilenetv3_large_100")
VARIANTS = ("eager", "fused", "channels_last", "compile", "onnxruntime", "official")
"""``official`` only in the comparison row (:data:`OFFICIAL_ROW`)."""
GOAL_SIZE = 224
"""Resolution at which the goal is judged, at the largest batch size of the run."""

Runner = Callable[[], Any]

OFFICIAL_ENV = "KDFIQA_OFFICIAL_EMOV2"
"""Environment variable naming a checkout of github.com/zhangzjn/EMOv2 (never vendored)."""
OFFICIAL_FACTORY = "EMO2_1M_k5_hybrid"
"""The official EMOv2-1M builder in ``model/lib_emo/emo2.py``."""
OFFICIAL_ROW = "EMOv2-1M (1000 classes)"
COMPARE_BATCHES = (1, 64)
FUSED_OVER_OFFICIAL = 1.5
ONNX_OVER_EAGER = 2.0

OP_GROUPS = {
    "depthwise conv": (),
    "dense conv": ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d"),
    "activations": ("aten::silu", "aten::gelu", "aten::relu", "aten::hardswish", "aten::hardsigmoid",
                    "aten::sigmoid", "aten::clamp_min", "aten::silu_", "aten::relu_", "aten::hardswish_",
                    "aten::hardsigmoid_", "aten::clamp_min_"),
    "norms": ("aten::native_batch_norm", "aten::native_layer_norm", "aten::_native_batch_norm_legit_no_training"),
    "layout copies": ("aten::copy_", "aten::constant_pad_nd", "aten::cat", "aten::fill_"),
    "matmul + softmax": ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm", "aten::_softmax"),
    "element-wise": ("aten::add", "aten::mul", "aten::div", "aten::add_", "aten::mul_", "aten::mean"),
}
"""Groups of the profiler's leaf operators; a convolution whose weight has one input channel per
group (``[C, 1, k, k]``) counts as depthwise, every other convolution as dense."""


def op_breakdown(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Share (%) of eager inference time per operator group (:data:`OP_GROUPS`), from
    ``torch.profiler`` self times of one pass after a warm-up pass."""
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(x)
    times = {group: 0.0 for group in (*OP_GROUPS, "other")}
    for event in prof.key_averages(group_by_input_shape=True):
        group = next((g for g, ops in OP_GROUPS.items() if event.key in ops), "other")
        if group == "dense conv":
            weight = event.input_shapes[1] if len(event.input_shapes) > 1 else []
            if len(weight) == 4 and weight[1] == 1 and weight[0] > 1:
                group = "depthwise conv"
        times[group] += event.self_cpu_time_total
    total = sum(times.values()) or 1.0
    return {group: 100.0 * t / total for group, t in times.items()}


KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2 ** 40)}
"""glibc allocator settings that keep freed memory in the process for reuse: by default every block
above the mmap threshold (at most 32 MiB) is mapped fresh and unmapped again, so each large activation
map costs page faults on first touch."""


def allocator_effect(names: tuple[str, ...], batch: int, size: int, rounds: int) -> dict[str, dict[str, float]]:
    """Eager seconds and page faults per pass of each model under glibc's default allocator settings
    and under :data:`KEEP_FREED_MEMORY`, each in a fresh process (:mod:`benchmarks.allocator_probe`),
    the two settings alternating ``rounds`` times; medians per model and setting."""
    runs: dict[str, dict[str, list[dict]]] = {n: {"default": [], "keep": []} for n in names}
    for index in range(rounds):
        for name in names:
            for setting in ("default", "keep") if index % 2 == 0 else ("keep", "default"):
                env = {k: v for k, v in os.environ.items() if k not in KEEP_FREED_MEMORY}
                if setting == "keep":
                    env.update(KEEP_FREED_MEMORY)
                done = subprocess.run([sys.executable, "-m", "benchmarks.allocator_probe", name, str(batch),
                                       str(size), "3"], cwd=REPO, env=env, capture_output=True, text=True,
                                      check=True)
                runs[name][setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {name: {f"{setting} {key}": statistics.median(r[key] for r in results)
                   for setting, results in by_setting.items() for key in ("seconds", "faults_per_pass")}
            for name, by_setting in runs.items()}


def _repeats(settings: dict[str, Any], batch: int, key: str = "repeats") -> int:
    """Timed repeats: more at batch 1, where one pass takes milliseconds and load noise dominates."""
    return settings["batch1_repeats"] if batch == 1 else settings[key]


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"models": [DEFAULT_STUDENT, *PEERS], "sizes": (224,), "batches": (1, 16),
                "repeats": 3, "compile_models": (DEFAULT_STUDENT, *PEERS), "compile_sizes": (224,),
                "compile_batches": (16,), "compare_repeats": 3, "batch1_repeats": 15}
    students = [n for n in list_models() if model_info(n).is_student]
    return {"models": [*students, *PEERS], "sizes": (224, 288), "batches": (1, 64), "repeats": 5,
            "compile_models": (DEFAULT_STUDENT, *PEERS), "compile_sizes": (224,), "compile_batches": (1, 64),
            "compare_repeats": 5, "batch1_repeats": 25}


def _eager(model: nn.Module, x: torch.Tensor) -> Runner:
    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def _channels_last(model: nn.Module, x: torch.Tensor) -> Runner:
    converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return _eager(converted, x.contiguous(memory_format=torch.channels_last))


def _compiled(model: nn.Module, x: torch.Tensor) -> Runner:
    compiled = torch.compile(model, dynamic=False)

    def run() -> Any:
        with torch.no_grad():
            return compiled(x)

    run()  # compiles for this shape
    return run


def _onnx_session(model: nn.Module, folder: Path, size: int) -> Any:
    import onnxruntime

    from kdfiqa.export import export_onnx

    path = folder / "model.onnx"
    export_onnx(model, path, size, exporter="legacy")  # dynamo's dynamic capture of EMO takes minutes
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads spin for a while after each run; interleaved with torch contenders
    # that spinning takes their cores (torch eager ran at less than half speed after it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx(session: Any, x: torch.Tensor) -> Runner:
    feed = {"image": x.numpy()}
    return lambda: session.run(["score"], feed)


def _measure_model(name: str, settings: dict[str, Any], folder: Path) -> tuple[list[dict], list[str]]:
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).eval()
    notes: list[str] = []
    try:
        session = _onnx_session(model, folder, settings["sizes"][0])
    except Exception as exc:  # an exporter or runtime limitation is a result, not a crash
        session = None
        notes.append(f"{name}: ONNX export/run failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    fused = fuse(model, input_size=settings["sizes"][0])
    rows = []
    for size in settings["sizes"]:
        gmacs = measure(model, size).gflops
        for batch in settings["batches"]:
            print(f"    {size}px batch {batch}", flush=True)
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size + batch))
            runners: dict[str, Runner] = {"eager": _eager(model, x), "fused": _eager(fused, x),
                                          "channels_last": _channels_last(model, x)}
            if (name in settings["compile_models"] and size in settings["compile_sizes"]
                    and batch in settings["compile_batches"]):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    runners["compile"] = _compiled(model, x)
            if session is not None:
                runners["onnxruntime"] = _onnx(session, x)
            seconds = interleaved_medians(runners, repeats=_repeats(settings, batch))
            row: dict[str, Any] = {"model": name, "input": size, "batch": batch, "GFLOPs": gmacs}
            for variant in VARIANTS:
                row[f"{variant} img/s"] = batch / seconds[variant] if variant in seconds else "-"
            best = max(seconds, key=lambda v: batch / seconds[v])
            row["eager GMAC/s"] = gmacs * batch / seconds["eager"]
            row["best"] = best
            row["best GMAC/s"] = gmacs * batch / seconds[best]
            rows.append(row)
    return rows, notes


def _official_emov2(weights: dict[str, torch.Tensor]) -> tuple[nn.Module | None, str]:
    """The official EMOv2-1M (imported from the checkout :data:`OFFICIAL_ENV` names) with
    ``weights`` loaded, or ``None`` and why it could not run."""
    checkout = os.environ.get(OFFICIAL_ENV)
    if not checkout:
        return None, f"not run: {OFFICIAL_ENV} unset"
    if not (Path(checkout) / "model" / "lib_emo" / "emo2.py").is_file():
        return None, f"not run: {OFFICIAL_ENV}={checkout} holds no model/lib_emo/emo2.py"
    sys.path.insert(0, checkout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("model.lib_emo.emo2")
        official = getattr(module, OFFICIAL_FACTORY)(num_classes=1000).eval()
        official.load_state_dict(weights, strict=True)
    except Exception as exc:  # its imports (einops, cv2, timm's API) are the checkout's business
        return None, f"not run: importing the official code failed ({type(exc).__name__}: {str(exc)[:120]})"
    finally:
        sys.path.remove(checkout)
    return official, f"official code from {checkout}"


def _official_output(official: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official EMOv2 returns ``{"out": logits, "out_kd": logits}``."""
    with torch.inference_mode():
        return official(x)["out"]


def _verdict(ratio: float, goal: float) -> str:
    return "met" if ratio >= goal else f"missed by {goal / ratio:.2f}x"


def _judged(verdicts: dict[str, bool], notes: list[str], key: str, goal_text: str, ratio: float, goal: float,
            aside: str) -> bool:
    """Record whether ``ratio`` meets ``goal`` (``verdicts[key]``) and the note saying so; returns
    whether the goal was missed (then the caller looks at where the time goes)."""
    verdicts[key] = ratio >= goal
    notes.append(f"goal, {goal_text}: {ratio:.2f}x ({_verdict(ratio, goal)}); {aside}")
    return ratio < goal


def _compare_official(settings: dict[str, Any], folder: Path) -> tuple[list[dict], list[str], dict[str, bool]]:
    """Rows for :data:`OFFICIAL_ROW`: kdfiqa's EMOv2-1M backbone with the 1000-class head, eager
    (training form), fused (inference form), ONNX Runtime and the official code, interleaved."""
    torch.manual_seed(0)
    model = create_backbone(DEFAULT_STUDENT, num_classes=1000).eval()
    fused = fuse(model, input_size=GOAL_SIZE)
    official, source = _official_emov2(model.state_dict())
    notes = [f"{OFFICIAL_ROW}: official contender {source}"]
    try:
        session = _onnx_session(model, folder, GOAL_SIZE)
    except Exception as exc:  # an exporter or runtime limitation is a result, not a crash
        session = None
        notes.append(f"{OFFICIAL_ROW}: ONNX Runtime not run ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    gmacs = measure(model, GOAL_SIZE).gflops
    rows, verdicts, gaps = [], {}, []
    for batch in COMPARE_BATCHES:
        print(f"    {OFFICIAL_ROW} batch {batch}", flush=True)
        x = torch.randn(batch, 3, GOAL_SIZE, GOAL_SIZE, generator=torch.Generator().manual_seed(batch))
        runners: dict[str, Runner] = {"eager": _eager(model, x), "fused": _eager(fused, x)}
        if official is not None:
            runners["official"] = lambda x=x: _official_output(official, x)
            with torch.inference_mode():
                diff = (_official_output(official, x) - model(x)).abs().max().item()
            notes.append(f"{OFFICIAL_ROW}, batch {batch}: official and kdfiqa outputs with the same weights "
                         f"differ by at most {diff:.2g}")
        if session is not None:
            runners["onnxruntime"] = _onnx(session, x)
        seconds = interleaved_medians(runners, repeats=_repeats(settings, batch, "compare_repeats"))
        row: dict[str, Any] = {"model": OFFICIAL_ROW, "input": GOAL_SIZE, "batch": batch, "GFLOPs": gmacs}
        for variant in VARIANTS:
            row[f"{variant} img/s"] = batch / seconds[variant] if variant in seconds else "-"
        best = max(seconds, key=lambda v: batch / seconds[v])
        row.update({"eager GMAC/s": gmacs * batch / seconds["eager"], "best": best,
                    "best GMAC/s": gmacs * batch / seconds[best]})
        rows.append(row)
        if official is not None and _judged(
                verdicts, notes, f"fused_vs_official_b{batch}",
                f"inference form >= {FUSED_OVER_OFFICIAL}x official eager, batch {batch}",
                seconds["official"] / seconds["fused"], FUSED_OVER_OFFICIAL,
                f"training form {seconds['official'] / seconds['eager']:.2f}x official"):
            gaps.append(("fused", fused, "official", official, x))
        if session is not None and _judged(
                verdicts, notes, f"onnx_vs_eager_b{batch}", f"ONNX Runtime >= {ONNX_OVER_EAGER}x kdfiqa eager, batch {batch}",
                seconds["eager"] / seconds["onnxruntime"], ONNX_OVER_EAGER,
                f"vs the inference form {seconds['fused'] / seconds['onnxruntime']:.2f}x"):
            gaps.append(("eager", model, "onnxruntime", None, x))
    if official is None:
        notes.append(f"goal, inference form >= {FUSED_OVER_OFFICIAL}x official eager: {source}")
    if session is None:
        notes.append(f"goal, ONNX Runtime >= {ONNX_OVER_EAGER}x kdfiqa eager: not run")
    for ours, ours_model, theirs, theirs_model, x in gaps[:2]:
        split = [(ours, op_breakdown(ours_model, x))]
        if theirs_model is not None:
            split.append((theirs, op_breakdown(theirs_model, x)))
        notes.append(f"where the time goes, batch {x.shape[0]} (torch.profiler self time): " + "; ".join(
            f"{label}: " + ", ".join(f"{g} {v:.0f}%" for g, v in sorted(shares.items(), key=lambda kv: -kv[1])
                                     if v >= 2) for label, shares in split))
    return rows, notes, verdicts


def run(quick: bool) -> dict:
    settings = _settings(quick)
    peak = gemm_gmacs()
    rows: list[dict] = []
    notes: list[str] = []
    with scratch_dir("inference") as folder:
        for name in settings["models"]:
            print(f"  {name}", flush=True)
            model_rows, model_notes = _measure_model(name, settings, folder)
            rows += model_rows
            notes += model_notes
        print(f"  {OFFICIAL_ROW}", flush=True)
        compare_rows, compare_notes, verdicts = _compare_official(settings, folder)
    rows += compare_rows
    for row in rows:
        row["best % of GEMM"] = 100.0 * row["best GMAC/s"] / peak
    size, batch = GOAL_SIZE, max(settings["batches"])
    at_goal = {r["model"]: r["eager GMAC/s"] for r in rows if r["input"] == size and r["batch"] == batch}
    student = at_goal[DEFAULT_STUDENT]
    peers = {p: at_goal[p] for p in PEERS}
    met = all(student >= v for v in peers.values()) and all(verdicts.values())
    notes.insert(0, f"fp32 GEMM rate measured in this run: {peak:.1f} GMAC/s (1024x1024 matmul, "
                    f"{torch.get_num_threads()} threads)")
    notes.insert(1, f"goal check, eager, batch {batch}, {size}x{size}: {DEFAULT_STUDENT} "
                    f"{student:.1f} GMAC/s vs " + ", ".join(f"{p} {v:.1f}" for p, v in peers.items())
                 + f" (ratio to the best peer {student / max(peers.values()):.2f})")
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    shares = {}
    for name in (DEFAULT_STUDENT, *PEERS):
        torch.manual_seed(0)
        shares[name] = op_breakdown(create_model(name, pretrained=False).eval(), x)
        top = sorted(shares[name].items(), key=lambda kv: -kv[1])
        notes.append(f"where eager time goes, {name} (batch {batch}, {size}x{size}, torch.profiler self "
                     "time): " + ", ".join(f"{group} {share:.0f}%" for group, share in top if share >= 1))
    notes += compare_notes
    glibc = platform.libc_ver()[0] == "glibc"
    if not all(student >= v for v in peers.values()):
        student_share = shares[DEFAULT_STUDENT]
        uncounted = sum(student_share[g] for g in ("activations", "layout copies", "element-wise"))
        notes.append(
            f"gap: {DEFAULT_STUDENT} turns fewer of its multiply-adds into images per second than the peers. "
            f"{uncounted:.0f}% of its time goes to activations, layout copies (window partition and reverse) "
            "and element-wise work, none of which fvcore counts; its convolutions "
            "themselves run on wide activation maps at 112x112 and 56x56 (a 16 -> 64 expansion and 5x5 "
            "depthwise kernels at 112x112), memory-bound layers that reach a small share of the GEMM rate"
            + ("; its large maps also meet the allocator (see below). " if glibc else ". ") +
            "This is the architecture as published (the parameter and FLOP counts equal the official "
            "model's), not overhead of kdfiqa's implementation"
        )
    if glibc:
        print("  allocator check", flush=True)
        effect = allocator_effect((DEFAULT_STUDENT, *PEERS), batch, size, rounds=2)
        gmacs = {r["model"]: r["GFLOPs"] * batch for r in rows if r["input"] == size and r["batch"] == batch}
        ratio = {setting: gmacs[DEFAULT_STUDENT] / effect[DEFAULT_STUDENT][f"{setting} seconds"]
                 / max(gmacs[p] / effect[p][f"{setting} seconds"] for p in PEERS) for setting in ("default", "keep")}
        setting = " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items())
        notes.append(
            f"allocator, eager, batch {batch}, {size}x{size}, each model in fresh processes: with glibc's "
            "default settings a pass page-faults " + ", ".join(
                f"{n} {e['default faults_per_pass'] * 4096 / 2 ** 30:.2f} GiB" for n, e in effect.items())
            + f" of fresh memory (4 KiB pages); with {setting} (freed memory kept for reuse) it runs "
            + ", ".join(f"{n} {e['default seconds'] / e['keep seconds']:.2f}x" for n, e in effect.items())
            + f" as fast; {DEFAULT_STUDENT}'s GMAC/s ratio to the best peer in these processes goes from "
            f"{ratio['default']:.2f} to {ratio['keep']:.2f}"
        )
    compiled = {r["model"]: r["compile img/s"] * r["GFLOPs"] for r in rows
                if r["input"] == size and r["batch"] == batch and r["compile img/s"] != "-"}
    if DEFAULT_STUDENT in compiled:
        notes.append(f"with torch.compile (inductor), batch {batch}, {size}x{size}: {DEFAULT_STUDENT} "
                     f"{compiled[DEFAULT_STUDENT]:.1f} GMAC/s vs "
                     + ", ".join(f"{p} {compiled[p]:.1f}" for p in PEERS if p in compiled)
                     + f"; compiling speeds {DEFAULT_STUDENT} up "
                     f"{compiled[DEFAULT_STUDENT] / student:.2f}x over eager (compile time not counted)")
    notes.append("'-' under compile: torch.compile runs for " + ", ".join(settings["compile_models"])
                 + f" at {', '.join(map(str, settings['compile_sizes']))} px and batch "
                 + " and ".join(map(str, settings["compile_batches"]))
                 + " only, because compiling takes a minute or more per model and shape on a small CPU")
    notes.append("images/s per GFLOP is read as achieved multiply-adds per second (images/s x fvcore "
                 "GMACs per image): a model that is cheaper per image must not also be slower per "
                 "multiply-add")
    notes.append(SHARED_MACHINE_NOTE)
    return {
        "title": TITLE,
        "goal": f"the default student ({DEFAULT_STUDENT}) achieves at least the peers' images/s per "
                f"GFLOP (eager, batch {batch}, {size}x{size}); on {OFFICIAL_ROW} at {GOAL_SIZE}x{GOAL_SIZE}, "
                f"batch {' and '.join(map(str, COMPARE_BATCHES))}: the inference form runs >= "
                f"{FUSED_OVER_OFFICIAL}x the official EMOv2 code eager (when {OFFICIAL_ENV} is set) and "
                f"ONNX Runtime >= {ONNX_OVER_EAGER}x kdfiqa eager",
        "met": met,
        "columns": ["model", "input", "batch", "GFLOPs", *[f"{v} img/s" for v in VARIANTS],
                    "eager GMAC/s", "best", "best % of GEMM"],
        "rows": rows,
        "notes": notes,
        "gemm_gmacs": peak,
    }
