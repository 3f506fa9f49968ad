"""Teacher and model scoring shared across ranks (kdfiqa.engine.sharded): each image once, in one
process's batches; pseudo-label, predict and evaluate under torchrun (one node and two "nodes")
write the bytes one process writes; an interrupted pseudo-labelling run resumes from its parts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdfiqa.engine.distributed import DistContext
from kdfiqa.engine.sharded import chunk_ranges, rank_chunks

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCRIPT = str(TESTS / "scripts" / "tiny_cli.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
for _name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "KDFIQA_TEST_SLEEP"):
    ENV.pop(_name, None)


def _ctx(rank: int, world: int) -> DistContext:
    return DistContext(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


@pytest.mark.parametrize("n,batch,chunk,world", [(11, 2, None, 2), (11, 2, None, 3), (7, 4, None, 4),
                                                 (13, 2, 4, 2), (13, 3, 3, 3), (0, 2, None, 2), (5, 2, 4, 4)])
def test_every_item_is_scored_once_in_the_batches_one_process_forms(n, batch, chunk, world):
    chunks = chunk_ranges(n, batch, chunk, world)
    shares = [[i for c in rank_chunks(range(len(chunks)), _ctx(r, world)) for i in chunks[c]] for r in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(n))  # once each, no padding
    assert [i for share in shares for i in share] == list(range(n))  # ranks in order: contiguous
    for c in chunks:  # every chunk starts on the single-process batch grid
        assert len(c) == 0 or c.start % batch == 0
    one_process = [list(range(a, min(a + batch, n))) for a in range(0, n, batch)]
    ranked = [list(c)[a:a + batch] for c in chunks for a in range(0, len(c), batch)]
    assert ranked == one_process


def test_a_shard_size_off_the_batch_grid_is_refused():
    from kdfiqa.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of the batch size 4"):
        chunk_ranges(10, 4, 6)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from tiny_fiqa import TINY, synthetic

    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
    from kdfiqa.models import create_model

    root = tmp_path_factory.mktemp("sharded")
    images, labels = synthetic(root, 11, 0, "labeled")
    torch.manual_seed(0)
    model = create_model(TINY)
    with torch.no_grad():  # batch-norm statistics that make scores differ between images
        model.train()(torch.rand(8, 3, 32, 32) * 4 - 2)
    ckpt = root / "teacher.pt"
    save_checkpoint(ckpt, build_checkpoint(model.eval()))
    return {"images": images, "labels": labels, "ckpt": ckpt, "root": root,
            "unlabeled": synthetic(root, 13, 1, "unlabeled")[0]}


def _run(argv: list[str], *, ranks: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    """``kdfiqa argv`` in one process (``ranks`` 0) or under torchrun with ``ranks`` processes."""
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
              if ranks else [sys.executable])
    done = subprocess.run([*launch, SCRIPT, *map(str, argv)], capture_output=True, text=True, timeout=300,
                          env=env or ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _commands(data: dict, out: Path) -> dict[str, list]:
    common = ["--batch-size", "2", "--device", "cpu"]
    return {
        "pseudo": ["pseudo-label", "--teacher", data["ckpt"], "--images", data["unlabeled"], "--out",
                   out / "pseudo.csv", "--calibrate", "--root", data["images"], "--csv", data["labels"],
                   "--raw-if-degenerate", "--shard-batches", "2", *common],
        "predict": ["predict", data["ckpt"], data["unlabeled"], data["images"], "--out", out / "predict.csv",
                    *common],
        "evaluate": ["evaluate", data["ckpt"], "--root", data["images"], "--csv", data["labels"], "--json",
                     *common],
    }


@pytest.mark.slow  # torchrun starts two fresh interpreters per command
def test_two_ranks_write_the_bytes_one_process_writes(data, tmp_path):
    outputs = {}
    for ranks in (0, 2):
        out = tmp_path / f"ranks{ranks}"
        out.mkdir()
        results = {name: _run(argv, ranks=ranks) for name, argv in _commands(data, out).items()}
        json_lines = [line for line in results["evaluate"].stdout.splitlines() if line.startswith("{")]
        assert len(json_lines) == 1  # rank 0 alone prints
        outputs[ranks] = {"pseudo": (out / "pseudo.csv").read_bytes(), "predict": (out / "predict.csv").read_bytes(),
                          "evaluate": json_lines[0]}
        assert not (out / "pseudo.csv.parts").exists()  # removed once the CSV is written
    assert outputs[0]["pseudo"].count(b"\n") == 13 and outputs[0]["predict"].count(b"\n") == 1 + 13 + 11
    for name in ("pseudo", "predict", "evaluate"):
        assert outputs[2][name] == outputs[0][name], name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(argv: list) -> list[subprocess.CompletedProcess]:
    """``kdfiqa argv`` as 2 "nodes" x 1 process on this host: two torchrun launchers meeting at a c10d
    rendezvous on 127.0.0.1."""
    port = _free_port()
    launchers = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
                                   str(rank), "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                   f"127.0.0.1:{port}", "--rdzv-id", f"kdfiqa-test-{port}", SCRIPT, *map(str, argv)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for rank in (0, 1)]
    done = []
    for launcher in launchers:
        out, err = launcher.communicate(timeout=300)
        assert launcher.returncode == 0, err[-3000:]
        done.append(subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err))
    return done


@pytest.mark.slow  # two torchrun launchers and a one-epoch distillation on each side
def test_two_nodes_label_and_distill_as_one_process_does(data, tmp_path):
    import json

    from tiny_fiqa import TINY

    from kdfiqa.checkpoint import load_checkpoint

    single, nodes = tmp_path / "single", tmp_path / "nodes"
    for out in (single, nodes):
        out.mkdir()
    argv = _commands(data, single)["pseudo"]
    _run(argv)
    _two_nodes(_commands(data, nodes)["pseudo"])
    assert (nodes / "pseudo.csv").read_bytes() == (single / "pseudo.csv").read_bytes()

    rows = data["labels"].read_text().splitlines(keepends=True)
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("".join(rows[4:]))
    val.write_text("".join(rows[:4]))
    distill = ["distill", "--model", TINY, "--root", data["images"], "--csv", train, "--val-csv", val, "--teacher",
               data["ckpt"], "--unlabeled", data["unlabeled"], "--device", "cpu", "--quiet", "--epochs", "1",
               "--batch-size", "4"]
    _run([*distill, "--out", single / "run"])
    _two_nodes([*distill, "--out", nodes / "run"])
    # the teacher's labels of the unlabeled images are the same bytes
    assert (nodes / "run" / "pseudo_labels.csv").read_bytes() == (single / "run" / "pseudo_labels.csv").read_bytes()
    one, two = load_checkpoint(single / "run" / "last.pt"), load_checkpoint(nodes / "run" / "last.pt")
    assert two["step"] < one["step"]  # the 20 training images were shared by the two nodes
    # as the torchrun training test holds: the 2-node run's logged validation metrics (gathered from
    # both nodes) are those one process computes on its final checkpoint
    logged = json.loads((nodes / "run" / "log.jsonl").read_text().splitlines()[-1])["val"]
    evaluated = json.loads(_run(["evaluate", nodes / "run" / "last.pt", "--root", data["images"], "--csv", val,
                                 "--json", "--device", "cpu"]).stdout)
    assert logged["n"] == evaluated["n"] == 4
    for key in ("srcc", "plcc", "krcc", "rmse", "score"):
        assert logged[key] == pytest.approx(evaluated[key], rel=1e-6), key


def _labelling_reference(data, tmp_path) -> tuple[list, Path]:
    """The arguments of a labelling run in shards of one batch of 2 (13 images: 7 shards), and the
    CSV an uninterrupted run of them writes."""
    argv = ["pseudo-label", "--teacher", data["ckpt"], "--images", data["unlabeled"], "--batch-size", "2",
            "--shard-batches", "1", "--device", "cpu"]
    full = tmp_path / "full.csv"
    _run([*argv, "--out", full])
    return argv, full


@pytest.mark.slow  # a slow teacher killed part-way, then resumed
def test_a_killed_labelling_run_resumes_from_its_parts_and_writes_the_same_csv(data, tmp_path):
    argv, full = _labelling_reference(data, tmp_path)
    broken = tmp_path / "broken.csv"
    parts = Path(f"{broken}.parts")
    run = subprocess.Popen([sys.executable, SCRIPT, *map(str, argv), "--out", str(broken)],
                           env={**ENV, "KDFIQA_TEST_SLEEP": "0.4"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.json"))) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    kept = len(list(parts.glob("part-*.json")))
    assert 2 <= kept < 7 and not broken.exists()  # killed part-way: 13 images in 7 shards of 2
    resumed = _run([*argv, "--out", broken, "--resume"])
    kept_images = min(2 * kept, 13)
    assert f"scored {13 - kept_images} images, {kept_images} kept from earlier parts" in resumed.stderr
    assert broken.read_bytes() == full.read_bytes()
    assert not parts.exists()


@pytest.mark.slow
def test_a_stale_part_is_scored_again(data, tmp_path):
    import json

    out = tmp_path / "labels.csv"
    argv = ["pseudo-label", "--teacher", data["ckpt"], "--images", data["unlabeled"], "--batch-size", "2",
            "--shard-batches", "2", "--device", "cpu", "--out", out]
    _run(argv)
    reference = out.read_bytes()
    out.unlink()
    parts = Path(f"{out}.parts")
    parts.mkdir()
    forged = {"format": "kdfiqa.label_part.v1", "fingerprint": "another teacher", "shard": 0,
              "rows": [[name, 0.5, None] for name in ("a.png", "b.png", "c.png", "d.png")]}
    (parts / "part-000000.json").write_text(json.dumps(forged))
    resumed = _run([*argv, "--resume"])
    assert "scored 13 images, 0 kept from earlier parts" in resumed.stderr
    assert out.read_bytes() == reference


@pytest.mark.slow  # torchrun starts two fresh interpreters
def test_two_ranks_build_the_view_cache_one_process_builds(data, tmp_path):
    script = str(TESTS / "scripts" / "view_cache_ddp.py")
    args = [str(data["images"]), str(data["labels"])]
    for launch, out in (([sys.executable], tmp_path / "one.pt"),
                        ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                         tmp_path / "two.pt")):
        done = subprocess.run([*launch, script, *args, str(out)], capture_output=True, text=True, timeout=300,
                              env=ENV)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (torch.load(tmp_path / name, weights_only=True) for name in ("one.pt", "two.pt"))
    assert one["names"] == two["names"] and len(one["names"]) == 11
    for key in ("boxes", "flips", "logits"):
        assert torch.equal(one[key], two[key]), key
    assert len({tuple(b) for b in one["boxes"][:, :, 0].tolist()}) > 1  # the views differ


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(item[5:]) for item in env if item.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.slow  # torchrun with a slow teacher; one rank killed part-way
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes through /proc")
def test_killing_one_rank_loses_at_most_the_shards_in_flight(data, tmp_path):
    argv, full = _labelling_reference(data, tmp_path)
    broken = tmp_path / "broken.csv"
    parts = Path(f"{broken}.parts")
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 "2", SCRIPT, *map(str, argv), "--out", str(broken)],
                                env={**ENV, "KDFIQA_TEST_SLEEP": "0.4"}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    # 13 images in 7 shards of 2: rank 0 scores shards 0-2, rank 1 shards 3-6
    deadline = time.monotonic() + 120
    while not ((parts / "part-000000.json").exists() and (parts / "part-000003.json").exists()):
        assert time.monotonic() < deadline and launcher.poll() is None, "no part of both ranks appeared"
        time.sleep(0.05)
    children = [int(p) for p in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()]
    rank1 = [pid for pid in children if _rank_of(pid) == 1]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    launcher.wait(timeout=120)
    assert launcher.returncode != 0 and not broken.exists()
    kept = sorted(p.name for p in parts.glob("part-*.json"))
    assert {"part-000000.json", "part-000003.json"} <= set(kept) and len(kept) < 7
    resumed = _run([*argv, "--out", broken, "--resume"])
    kept_images = sum(1 if name == "part-000006.json" else 2 for name in kept)
    assert f"scored {13 - kept_images} images, {kept_images} kept from earlier parts" in resumed.stderr
    assert broken.read_bytes() == full.read_bytes()


def test_amp_and_channels_last_change_nothing_on_the_cpu_and_say_so(data, tmp_path, capsys):
    import tiny_fiqa  # noqa: F401  (registers the tiny model the checkpoint names)

    from kdfiqa.cli.main import main

    plain, fast = tmp_path / "plain.csv", tmp_path / "fast.csv"
    base = ["predict", str(data["ckpt"]), str(data["images"]), "--device", "cpu", "--batch-size", "4"]
    assert main([*base, "--out", str(plain)]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main([*base, "--out", str(fast), "--amp", "bf16", "--channels-last"]) == 0
    err = capsys.readouterr().err
    assert "note: --amp bf16 and --channels-last apply on CUDA only" in err
    assert fast.read_bytes() == plain.read_bytes()


@pytest.mark.slow  # torchrun starts two fresh interpreters
def test_two_ranks_fit_the_online_teacher_calibration_one_process_fits(data, tmp_path):
    """``--calibrate-online`` scores the labeled images shared by the ranks: the same fit, the same file."""
    from tiny_fiqa import TINY

    rows = data["labels"].read_text().splitlines(keepends=True)
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    train.write_text("".join(rows[4:]))
    val.write_text("".join(rows[:4]))
    distill = ["distill", "--model", TINY, "--root", data["images"], "--csv", train, "--val-csv", val, "--teacher",
               data["ckpt"], "--unlabeled", data["unlabeled"], "--unlabeled-use", "online", "--calibrate-online",
               "--raw-if-degenerate", "--device", "cpu", "--quiet", "--epochs", "1", "--batch-size", "4"]
    _run([*distill, "--out", tmp_path / "one"])
    _run([*distill, "--out", tmp_path / "two"], ranks=2)
    assert ((tmp_path / "two" / "teacher_calibration.json").read_bytes()
            == (tmp_path / "one" / "teacher_calibration.json").read_bytes())


def test_a_distill_stopped_in_its_labelling_resumes_from_the_parts_it_kept(data, tmp_path, capsys, monkeypatch):
    """``distill --unlabeled`` keeps the teacher's scores in part files in its run folder: stopped
    after two shards it leaves no last.pt, a new run there is refused, ``--resume`` scores only the
    rest into the bytes an uninterrupted run writes, and resuming the finished run scores nothing."""
    from tiny_fiqa import TINY, run_cli

    from kdfiqa.distill import label_parts
    from kdfiqa.pipeline import labelling

    monkeypatch.setattr(labelling, "LABEL_SHARD_BATCHES", 1)  # 13 images in batches of 2: 7 shards
    argv = ["distill", "--model", TINY, "--root", data["images"], "--csv", data["labels"], "--teacher", data["ckpt"],
            "--unlabeled", data["unlabeled"], "--val-fraction", "0.3", "--device", "cpu", "--quiet", "--epochs", "1",
            "--batch-size", "2"]
    code, _, err = run_cli(capsys, [*argv, "--out", tmp_path / "whole"])
    assert code == 0, err

    write, scored = label_parts.LabelParts.write, []

    def stop_after_two(self, shard, rows):
        write(self, shard, rows)
        scored.append(shard)
        if len(scored) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(label_parts.LabelParts, "write", stop_after_two)
        assert run_cli(capsys, [*argv, "--out", tmp_path / "run"])[0] == 130
    run, parts = tmp_path / "run", tmp_path / "run" / "pseudo_labels.csv.parts"
    kept = sorted(scored)
    assert len(list(parts.glob("part-*.json"))) == 2
    assert not any(run.rglob("last.pt")) and not (run / "pseudo_labels.csv").exists()

    code, _, err = run_cli(capsys, [*argv, "--out", run])
    assert code != 0 and "interrupted run" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    assert len(list(parts.glob("part-*.json"))) == 2  # the refusal kept them

    scored.clear()
    monkeypatch.setattr(label_parts.LabelParts, "write", lambda self, shard, rows: (scored.append(shard),
                                                                                   write(self, shard, rows)))
    code, _, err = run_cli(capsys, [*argv, "--out", run, "--resume"])
    assert code == 0, err
    assert sorted(scored) == sorted(set(range(7)) - set(kept))  # only the shards not kept
    assert (run / "pseudo_labels.csv").read_bytes() == (tmp_path / "whole" / "pseudo_labels.csv").read_bytes()
    assert (run / "last.pt").is_file() and len(list(parts.glob("part-*.json"))) == 7

    scored.clear()
    (run / "pseudo_labels.csv").unlink()
    code, _, err = run_cli(capsys, [*argv, "--out", run, "--resume"])
    assert code == 0, err
    assert scored == []  # the finished run's labelling is read back, not scored again
    assert (run / "pseudo_labels.csv").read_bytes() == (tmp_path / "whole" / "pseudo_labels.csv").read_bytes()

    scored.clear()
    code, _, err = run_cli(capsys, [*argv, "--out", run, "--overwrite"])
    assert code == 0, err
    assert sorted(scored) == list(range(7))  # a new run scores every image again
