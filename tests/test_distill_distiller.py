"""The distillation objective (kdfiqa.distill.Distiller)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from distill_tiny_models import TinyFIQA, batch
from kdfiqa.distill import Distiller, Student, Teacher
from kdfiqa.errors import ConfigError, DataError
from kdfiqa.losses import FeatureLoss, create_loss

FEATURES = [("backbone.4", "backbone.1", "feature", 0.5)]


def _pair(teacher_width: int = 6):
    torch.manual_seed(0)
    teacher = TinyFIQA(teacher_width, default_input_size=(3, 24, 24))
    with torch.no_grad():  # trained-looking statistics, so a reset or an update would show
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return teacher, TinyFIQA(4)


def _steps(objective: torch.nn.Module, n: int = 3, loss=None) -> None:
    """``n`` SGD steps on ``loss(batch)`` (default: the objective's own forward)."""
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    objective.train()
    for i in range(n):
        opt.zero_grad()
        (loss or objective)(batch(4, 16, seed=i))["loss"].backward()
        opt.step()


def _tensor_ids(module: torch.nn.Module) -> set[int]:
    return {id(t) for t in [*module.parameters(), *module.buffers()]}


def test_teacher_bn_statistics_and_weights_unchanged_after_distillation_steps():
    teacher, student = _pair()
    before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    distiller = Distiller(teacher, student, feature_losses=FEATURES)
    _steps(distiller)
    assert not any(m.training for m in distiller.teacher.modules())
    assert distiller.model.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(student.state_dict()["backbone.1.running_mean"], student_before["backbone.1.running_mean"])
    assert all(p.grad is None for p in teacher.parameters())


def test_trainable_parameters_are_student_and_projectors_never_teacher():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, feature_losses=FEATURES)
    trainable = {id(p) for p in distiller.parameters() if p.requires_grad}
    student_ids = {id(p) for p in student.parameters()}
    projector_ids = {id(p) for p in distiller.trainable.feature_losses.parameters()}
    assert trainable == student_ids | projector_ids
    assert not trainable & {id(p) for p in teacher.parameters()}
    # the trainable part (what a trainer wraps in DDP) holds no teacher tensor at all
    assert {id(p) for p in distiller.trainable.parameters()} == student_ids | projector_ids
    assert not _tensor_ids(distiller.trainable) & _tensor_ids(teacher)
    assert distiller.model is student


def test_forward_is_the_trainable_part_on_the_frozen_part():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, "mse", "temperature_mse", FEATURES)
    b = batch(4, 16)
    frozen = distiller.frozen_forward(b)
    assert frozen.logits.shape == (4,) and not frozen.logits.requires_grad
    assert [tuple(f.shape) for f in frozen.features] == [(4, 6, 24, 24)]  # at the teacher's size
    assert not any(f.requires_grad for f in frozen.features)
    split = distiller.trainable(b, frozen)
    whole = distiller(b)
    assert split.keys() == whole.keys()
    for key in whole:
        assert split[key].item() == pytest.approx(whole[key].item(), rel=1e-6), key


def test_saved_student_has_exactly_the_bare_students_parameters():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, feature_losses=FEATURES)
    _steps(distiller, 1)
    saved = distiller.model.state_dict()
    fresh = TinyFIQA(4)
    assert saved.keys() == fresh.state_dict().keys()
    saved_params = sum(saved[name].numel() for name, _ in fresh.named_parameters())
    assert saved_params == sum(p.numel() for p in fresh.parameters())
    projector_params = sum(p.numel() for p in distiller.trainable.feature_losses.parameters())
    assert projector_params == 8 * 6 + 6  # 1x1 conv from the student's 8 channels to the teacher's 6
    assert Student(distiller.model).reports[0].params == sum(p.numel() for p in fresh.parameters())


def test_loss_is_the_weighted_sum_of_task_distill_and_feature_terms():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, "mse", "temperature_mse", FEATURES, task_weight=0.7, distill_weight=0.3)
    b = batch(4, 16, teacher_size=24)
    out = distiller(b)
    z_s = student.forward_logits(b["image"])[:, 0]
    with torch.no_grad():
        z_t = teacher.eval().forward_logits(b["teacher_image"])[:, 0]
        f_t = teacher.backbone[:2](b["teacher_image"])
    f_s = student.backbone[:5](b["image"])
    task = sum((torch.sigmoid(s) - y) ** 2 for s, y in zip(z_s, b["score"])) / 4
    distill = create_loss("temperature_mse")(z_s, z_t)
    feature = distiller.trainable.feature_losses[0](f_s, f_t)
    assert out["task"].item() == pytest.approx(task.item(), rel=1e-5)
    assert out["distill"].item() == pytest.approx(distill.item(), rel=1e-5)
    assert out["feature/backbone.4"].item() == pytest.approx(feature.item(), rel=1e-5)
    expected = 0.7 * task + 0.3 * distill + 0.5 * feature
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_hooks_keep_nothing_outside_the_distillers_forward():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, feature_losses=FEATURES)
    distiller(batch(2))
    student(batch(2)["image"])  # e.g. validation, or a user's own forward with autograd
    assert all(tap.value is None for tap in distiller.trainable.taps + distiller._teacher_taps)
    copy.deepcopy(student)  # a non-leaf activation held by a hook would make this fail


def test_unlabelled_batches_need_task_loss_none():
    teacher, student = _pair()
    b = batch(4, labels=False)
    with pytest.raises(DataError, match="task_loss=None"):
        Distiller(teacher, student)(b)
    out = Distiller(teacher, student, task_loss=None, distill_loss="temperature_mse + plcc")(b)
    assert {"loss", "distill", "distill/temperature_mse", "distill/plcc"} <= out.keys()


def test_feature_loss_config_errors():
    teacher, student = _pair()
    with pytest.raises(ConfigError, match="backbone.4"):
        Distiller(teacher, student, feature_losses=[("backbone.9", "backbone.1")])
    with pytest.raises(ConfigError, match="one teacher network"):
        Distiller(Teacher([teacher, TinyFIQA(6)]), student, feature_losses=[("backbone.4", "backbone.1")])
    with pytest.raises(ConfigError, match="no loss"):
        Distiller(teacher, student, None, None)


@pytest.fixture
def gloo_group(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_feature_hooks_are_named_on_the_unwrapped_model_under_ddp(gloo_group):
    teacher, student = _pair()
    wrapped = DistributedDataParallel(student)
    assert "module.backbone.4" in dict(wrapped.named_modules())
    distiller = Distiller(teacher, wrapped, feature_losses={"stage": ("backbone.4", "backbone.1")})
    assert distiller.model is student
    with pytest.raises(ConfigError, match="module.backbone.4"):
        Distiller(teacher, wrapped, feature_losses=[("module.backbone.4", "backbone.1")])
    plain = Distiller(teacher, copy.deepcopy(student), feature_losses={"stage": ("backbone.4", "backbone.1")})
    plain.trainable.feature_losses.load_state_dict(distiller.trainable.feature_losses.state_dict())
    b = batch(4)
    assert distiller(b)["feature/stage"].item() == pytest.approx(plain(b)["feature/stage"].item(), rel=1e-6)
    # the trainer's way: the teacher outside, DDP around the trainable part; hooks keep working,
    # state dict keys stay bare
    ddp_trainable = DistributedDataParallel(distiller.trainable)
    _steps(distiller, 2, loss=lambda b: ddp_trainable(b, distiller.frozen_forward(b)))
    assert set(distiller.model.state_dict()) == set(TinyFIQA(4).state_dict())
    assert isinstance(distiller.trainable.feature_losses[0], FeatureLoss)


@pytest.mark.slow
def test_a_linear_output_student_and_teacher_distil_in_score_space():
    """The ECNU-SJTU student regresses scores: its task loss sees its raw output, and logit-space
    distillation compares the clamped logits of both sides' scores."""
    from kdfiqa.distill import Distiller, Teacher
    from kdfiqa.distill.score_table import score_to_logit
    from kdfiqa.losses import create_loss
    from kdfiqa.models import create_model

    torch.manual_seed(0)
    student, teacher_net = create_model("ecnu_sjtu_student"), create_model("ecnu_sjtu_student")
    teacher = Teacher(teacher_net, input_size=64)
    distiller = Distiller(teacher, student, task_loss="mse", distill_loss="temperature_mse")
    batch = {"image": torch.randn(4, 3, 64, 64), "score": torch.rand(4)}
    distiller.eval()
    with torch.no_grad():
        out = distiller(batch)
        s_raw = student.forward_logits(batch["image"]).reshape(-1)
        t_raw = teacher_net.forward_logits(batch["image"]).reshape(-1)
    assert out["task"].item() == pytest.approx(torch.mean((s_raw - batch["score"]) ** 2).item(), rel=1e-5)
    expected = create_loss("temperature_mse")(score_to_logit(s_raw), score_to_logit(t_raw))
    assert out["distill"].item() == pytest.approx(float(expected), rel=1e-5)
