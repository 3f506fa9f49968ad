"""Every loss against a direct, loop-by-loop computation of its seed equation: values and gradients.

The references below are plain Python over floats (``math``), written from the equations, not from
the vectorised code under test; gradients are compared with central finite differences of them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdfiqa.errors import ConfigError
from kdfiqa.losses import (
    LOSS_KINDS,
    CorrLoss,
    FeatureLoss,
    FocalSmoothLoss,
    PLCCLoss,
    RankLoss,
    WeightedSum,
    WingLoss,
    create_loss,
    list_losses,
    parse_formula,
    register_loss,
)

# ---------------------------------------------------------------------------- references (loops)


def ref_mse(p, y):
    return sum((a - b) ** 2 for a, b in zip(p, y)) / len(p)


def ref_l1(p, y):
    return sum(abs(a - b) for a, b in zip(p, y)) / len(p)


def ref_wing(p, y, w=0.03, eps=2.0):
    c = w - w * math.log(1 + w / eps)
    out = []
    for a, b in zip(p, y):
        x = abs(a - b)
        out.append(w * math.log(1 + x / eps) if x < w else x - c)
    return sum(out) / len(out)


def ref_plcc(p, y):
    n = len(p)
    mp, my = sum(p) / n, sum(y) / n
    num = sum((y[i] - my) * (p[i] - mp) for i in range(n))
    den = math.sqrt(sum((v - my) ** 2 for v in y)) * math.sqrt(sum((v - mp) ** 2 for v in p))
    return 1 - num / den


def sign(v):
    return (v > 0) - (v < 0)


def ref_rank(p, y):
    terms = []
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j and y[i] != y[j]:
                terms.append(math.log(1 + math.exp(-(p[i] - p[j]) * sign(y[i] - y[j]))))
    return sum(terms) / len(terms) if terms else 0.0


def ref_focal_smooth(p, y, gamma=2.0, s=1.0, noise=None, eps=0.0):
    out = []
    for k, (a, b) in enumerate(zip(p, y)):
        smoothed = b + (eps * noise[k] if noise is not None else 0.0)
        mse = (a - smoothed) ** 2
        out.append(s * (1 - math.exp(-mse)) ** gamma * mse)
    return sum(out) / len(out)


def ref_corr(p, y, alpha):
    return alpha * ref_plcc(p, y) + (1 - alpha) * ref_rank(p, y)


def ref_plcc_nin(p, y):
    def normalise(v):
        m = sum(v) / len(v)
        sd = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
        return [(x - m) / sd for x in v]

    a, b = normalise(p), normalise(y)
    n = len(a)
    rho = sum(a[i] * b[i] for i in range(n)) / n
    l0 = sum((a[i] - b[i]) ** 2 for i in range(n)) / n / 4
    l1 = sum((rho * a[i] - b[i]) ** 2 for i in range(n)) / n / 4
    return (l0 + l1) / 2


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def ref_temperature_mse(zs, zt, t=4.0):
    return t * t * sum((sigmoid(a / t) - sigmoid(b / t)) ** 2 for a, b in zip(zs, zt)) / len(zs)


def ref_rank_kd(zs, zt, t=1.0):
    def softmax(v):
        e = [math.exp(x / t) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax(zt), softmax(zs)
    return sum(p[i] * (math.log(p[i]) - math.log(q[i])) for i in range(len(p)))


def ref_adaptive_margin(q_ref, q_deg, sev, lam=0.1):
    return sum(max(0.0, -(a - b) + lam * s) for a, b, s in zip(q_ref, q_deg, sev)) / len(q_ref)


# name → (build kwargs, reference(pred, target))
TASK_REFERENCES = {
    "mse": ({}, ref_mse),
    "l1": ({}, ref_l1),
    "wing": ({}, ref_wing),
    "plcc": ({}, ref_plcc),
    "plcc_nin": ({}, ref_plcc_nin),
    "rank": ({}, ref_rank),
    "corr": ({"alpha": 0.3}, lambda p, y: ref_corr(p, y, 0.3)),
    "hybrid": ({}, lambda p, y: ref_corr(p, y, 0.75)),
    "focal_smooth": ({"gamma": 1.5, "scale": 3.0}, lambda p, y: ref_focal_smooth(p, y, 1.5, 3.0)),
    "conquerit": (
        {"lam": 0.4, "alpha": 0.6, "gamma": 2.0, "scale": 2.0},
        lambda p, y: 0.4 * ref_corr(p, y, 0.6) + 0.6 * ref_focal_smooth(p, y, 2.0, 2.0),
    ),
    "coreface": (
        {"alpha": 2.0, "beta": 0.5},
        lambda p, y: 2.0 * ref_wing(p, y) + 0.5 * ref_plcc(p, y),
    ),
}


def finite_difference(fn, values, h=1e-6):
    grads = []
    for k in range(len(values)):
        up, down = list(values), list(values)
        up[k] += h
        down[k] -= h
        grads.append((fn(up) - fn(down)) / (2 * h))
    return grads


def batch(seed, n=7, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(n, generator=g, dtype=torch.float64) * spread
    target = torch.rand(n, generator=g, dtype=torch.float64)
    return pred, target


# ---------------------------------------------------------------------------- values and gradients


def test_every_registered_loss_is_covered_and_documented():
    covered = set(TASK_REFERENCES) | {"temperature_mse", "rank_kd", "adaptive_margin", "feature"}
    assert set(list_losses()) == covered
    for name in list_losses():
        cls = type(create_loss(name, **({"teacher_channels": 4} if name == "feature" else {})))
        assert cls.kind in LOSS_KINDS
        assert "seed" in cls.__doc__ or "kdfiqa defines" in cls.__doc__, name


@pytest.mark.parametrize("name", sorted(TASK_REFERENCES))
@pytest.mark.parametrize("seed", [0, 1])
def test_task_loss_value_and_gradient_match_loop_reference(name, seed):
    kwargs, ref = TASK_REFERENCES[name]
    loss = create_loss(name, **kwargs).eval()  # eval: no label noise in focal_smooth
    pred, target = batch(seed)
    pred.requires_grad_(True)
    value = loss(pred[:, None], target)  # (B, 1) predictions as a model returns them
    value.backward()
    p, y = pred.detach().tolist(), target.tolist()
    assert value.item() == pytest.approx(ref(p, y), rel=1e-6, abs=1e-9)
    expected = finite_difference(lambda v: ref(v, y), p)
    assert pred.grad.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_wing_pieces_by_hand():
    loss = WingLoss()
    c = 0.03 - 0.03 * math.log(1 + 0.03 / 2)
    small = loss(torch.tensor([0.51]), torch.tensor([0.5]))
    large = loss(torch.tensor([0.1]), torch.tensor([0.6]))
    assert small.item() == pytest.approx(0.03 * math.log(1 + 0.01 / 2), rel=1e-5)
    assert large.item() == pytest.approx(0.5 - c, rel=1e-5)


def test_rank_ignores_tied_pairs_and_degenerate_batches_give_zero():
    pred = torch.tensor([0.9, 0.1, 0.5, 0.3], dtype=torch.float64)
    target = torch.tensor([0.7, 0.2, 0.7, 0.2], dtype=torch.float64)
    only_untied = ref_rank(pred.tolist(), target.tolist())  # 8 ordered pairs out of 12
    assert RankLoss()(pred, target).item() == pytest.approx(only_untied, rel=1e-12)
    assert RankLoss()(pred, torch.full((4,), 0.5, dtype=torch.float64)).item() == 0.0
    assert RankLoss()(pred[:1], target[:1]).item() == 0.0


def test_focal_smooth_noise_comes_from_the_seeded_generator_in_training_only():
    pred, target = batch(3, n=5)
    loss = FocalSmoothLoss(epsilon=0.1, gamma=2.0, scale=2.0, seed=11)
    noise = torch.randn(5, generator=torch.Generator().manual_seed(11), dtype=torch.float64).tolist()
    expected = ref_focal_smooth(pred.tolist(), target.tolist(), 2.0, 2.0, noise=noise, eps=0.1)
    assert loss.train()(pred, target).item() == pytest.approx(expected, rel=1e-9)
    assert loss(pred, target).item() != pytest.approx(expected, rel=1e-9)  # generator moved on
    clean = ref_focal_smooth(pred.tolist(), target.tolist(), 2.0, 2.0)
    assert loss.eval()(pred, target).item() == pytest.approx(clean, rel=1e-9)


def test_distillation_losses_match_loops_and_leave_the_teacher_alone():
    g = torch.Generator().manual_seed(5)
    zs = (torch.randn(6, 1, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    zt = (torch.randn(6, 1, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    cases = [
        (create_loss("temperature_mse"), lambda a, b: ref_temperature_mse(a, b, 4.0)),
        (create_loss("temperature_mse", temperature=2.0), lambda a, b: ref_temperature_mse(a, b, 2.0)),
        (create_loss("rank_kd"), lambda a, b: ref_rank_kd(a, b, 1.0)),
        (create_loss("rank_kd", temperature=3.0), lambda a, b: ref_rank_kd(a, b, 3.0)),
    ]
    for loss, ref in cases:
        zs.grad = None
        value = loss(zs, zt)
        value.backward()
        a, b = zs.detach().flatten().tolist(), zt.detach().flatten().tolist()
        assert value.item() == pytest.approx(ref(a, b), rel=1e-9)
        expected = finite_difference(lambda v: ref(v, b), a)
        assert zs.grad.flatten().tolist() == pytest.approx(expected, rel=1e-4, abs=1e-8)
        assert zt.grad is None


def test_adaptive_margin_matches_loop_with_per_pair_and_shared_severity():
    g = torch.Generator().manual_seed(2)
    q_ref = torch.rand(8, generator=g, dtype=torch.float64).requires_grad_(True)
    q_deg = torch.rand(8, generator=g, dtype=torch.float64)
    severity = torch.rand(8, generator=g, dtype=torch.float64)
    loss = create_loss("adaptive_margin", margin_scale=0.5)
    value = loss(q_ref, q_deg, severity)
    value.backward()
    a, b, s = q_ref.detach().tolist(), q_deg.tolist(), severity.tolist()
    assert value.item() == pytest.approx(ref_adaptive_margin(a, b, s, 0.5), rel=1e-12)
    expected = finite_difference(lambda v: ref_adaptive_margin(v, b, s, 0.5), a)
    assert q_ref.grad.tolist() == pytest.approx(expected, abs=1e-6)
    shared = loss(q_ref, q_deg, 0.3).item()
    assert shared == pytest.approx(ref_adaptive_margin(a, b, [0.3] * 8, 0.5), rel=1e-12)


def ref_feature(weight, bias, s, t, mode):
    """Project every position of s by the 1×1 weights, average-pool to t's size, compare by loops."""
    cs, ct = len(s[0]), len(t[0])
    hs, ws, ht, wt = len(s[0][0]), len(s[0][0][0]), len(t[0][0]), len(t[0][0][0])
    total, count = 0.0, 0
    for n in range(len(s)):
        for i in range(ht):
            for j in range(wt):
                # adaptive pooling bins (PyTorch's floor/ceil rule); the projection is linear
                rows = range(i * hs // ht, -(-(i + 1) * hs // ht))
                cols = range(j * ws // wt, -(-(j + 1) * ws // wt))
                proj = []
                for o in range(ct):
                    acc = [
                        bias[o] + sum(weight[o][c] * s[n][c][r][q] for c in range(cs))
                        for r in rows
                        for q in cols
                    ]
                    proj.append(sum(acc) / len(acc))
                target = [t[n][o][i][j] for o in range(ct)]
                if mode == "mse":
                    total += sum((a - b) ** 2 for a, b in zip(proj, target))
                    count += ct
                else:
                    dot = sum(a * b for a, b in zip(proj, target))
                    norm = math.sqrt(sum(a * a for a in proj)) * math.sqrt(sum(b * b for b in target))
                    total += 1 - dot / norm
                    count += 1
    return total / count


@pytest.mark.parametrize("mode", ["mse", "cosine"])
def test_feature_loss_projects_pools_and_compares_like_the_loop(mode):
    torch.manual_seed(0)
    loss = FeatureLoss(3, 4, mode=mode).double()
    s = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    value = loss(s, t)
    value.backward()
    w = loss.projector.weight.detach()[:, :, 0, 0].tolist()
    b = loss.projector.bias.detach().tolist()
    assert value.item() == pytest.approx(ref_feature(w, b, s.tolist(), t.tolist(), mode), rel=1e-9)
    assert t.grad is None  # the teacher feature is a target, not trained
    assert s.grad is not None and loss.projector.weight.grad is not None
    # gradient w.r.t. one projector weight against a finite difference of the loop
    h = 1e-6
    up = [row[:] for row in w]
    down = [row[:] for row in w]
    up[1][2] += h
    down[1][2] -= h
    sl, tl = s.tolist(), t.tolist()
    fd = (ref_feature(up, b, sl, tl, mode) - ref_feature(down, b, sl, tl, mode)) / (2 * h)
    assert loss.projector.weight.grad[1, 2, 0, 0].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_feature_loss_on_vectors_is_a_linear_projection_and_sizes_lazily():
    torch.manual_seed(1)
    loss = create_loss("feature", teacher_channels=5)
    s, t = torch.randn(4, 3), torch.randn(4, 5)
    value = loss(s, t)
    assert loss.projector.weight.shape == (5, 3, 1, 1)
    linear = F.linear(s, loss.projector.weight[:, :, 0, 0], loss.projector.bias)
    assert value.item() == pytest.approx(((linear - t) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="both"):
        loss(torch.randn(4, 3, 2, 2), t)


# ---------------------------------------------------------------------------- registry and composition


def test_composites_are_built_from_their_component_modules():
    corr = create_loss("corr", alpha=0.2)
    assert isinstance(corr.plcc, PLCCLoss) and isinstance(corr.rank, RankLoss)
    assert isinstance(create_loss("hybrid"), CorrLoss) and create_loss("hybrid").alpha == 0.75
    coreface = create_loss("coreface")
    assert isinstance(coreface.wing, WingLoss) and isinstance(coreface.plcc, PLCCLoss)
    conquerit = create_loss("conquerit", seed=0)
    assert isinstance(conquerit.corr, CorrLoss) and isinstance(conquerit.focal_smooth, FocalSmoothLoss)


def test_create_loss_errors_name_what_exists():
    with pytest.raises(ConfigError, match="did you mean wing"):
        create_loss("wingg")
    with pytest.raises(ConfigError, match="omega, epsilon"):
        create_loss("wing", width=1.0)
    with pytest.raises(ConfigError, match="alpha=1.5"):
        create_loss("corr", alpha=1.5)
    with pytest.raises(ConfigError, match="teacher_channels"):
        create_loss("feature")
    with pytest.raises(ConfigError, match="mode"):
        create_loss("feature", teacher_channels=3, mode="l2")
    assert list_losses("plcc*") == ["plcc", "plcc_nin"]
    assert list_losses(kind="distill") == ["rank_kd", "temperature_mse"]


def test_register_loss_requires_a_kind_and_a_free_name():
    with pytest.raises(ValueError, match="kind"):
        register_loss(type("NoKind", (torch.nn.Module,), {}), name="test_no_kind")
    with pytest.raises(ValueError, match="already registered"):
        register_loss(type("Again", (torch.nn.Module,), {"kind": "task"}), name="mse")


def test_weighted_sum_from_formula_adds_weighted_independent_terms():
    ws = WeightedSum("1.0*hybrid + 0.5*temperature_mse")
    assert str(ws) == "Loss = 1.0 * hybrid + 0.5 * temperature_mse"
    pred, target = batch(4)
    zs, zt = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    total, terms = ws(pred, target, student_logits=zs, teacher_logits=zt)
    hybrid = ref_corr(pred.tolist(), target.tolist(), 0.75)
    kd = ref_temperature_mse(zs.tolist(), zt.tolist())
    assert set(terms) == {"hybrid", "temperature_mse"}
    assert terms["hybrid"].item() == pytest.approx(hybrid, rel=1e-6)
    assert terms["temperature_mse"].item() == pytest.approx(kd, rel=1e-9)
    assert total.item() == pytest.approx(hybrid + 0.5 * kd, rel=1e-6)
    assert not any(v.requires_grad for v in terms.values())


def test_weighted_sum_from_mapping_with_options_modules_and_repeated_kinds():
    wing = WingLoss(omega=0.1)
    ws = WeightedSum({"mse": 2, "corr": {"weight": 0.5, "alpha": 0.1}, wing: 1.0, WingLoss(): 3.0})
    assert str(ws) == "Loss = 2.0 * mse + 0.5 * corr(alpha=0.1) + 1.0 * wing + 3.0 * wing_2"
    assert ws.terms["corr"].alpha == 0.1 and ws.terms["wing"] is wing
    pred, target = batch(6)
    p, y = pred.tolist(), target.tolist()
    expected = 2 * ref_mse(p, y) + 0.5 * ref_corr(p, y, 0.1) + ref_wing(p, y, w=0.1) + 3 * ref_wing(p, y)
    assert ws(pred, target)[0].item() == pytest.approx(expected, rel=1e-6)
    assert not ws.needs_teacher and WeightedSum("mse + rank_kd").needs_teacher


def test_weighted_sum_dispatches_feature_and_pair_terms():
    torch.manual_seed(0)
    f1, f2 = FeatureLoss(2, 3), FeatureLoss(4, 5, mode="cosine")
    ws = WeightedSum({f1: 1.0, f2: 2.0, "adaptive_margin": 1.0})
    s1, t1, s2, t2 = torch.randn(2, 2), torch.randn(2, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3)
    pair = (torch.rand(2), torch.rand(2), torch.rand(2))
    total, terms = ws(None, None, student_features=[s1, s2], teacher_features=[t1, t2], pair=pair)
    assert terms["feature"].item() == pytest.approx(f1(s1, t1).item())
    assert terms["feature_2"].item() == pytest.approx(f2(s2, t2).item())
    expected = f1(s1, t1) + 2 * f2(s2, t2) + create_loss("adaptive_margin")(*pair)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="2 feature terms"):
        ws(None, None, student_features=[s1], teacher_features=[t1], pair=pair)


def test_weighted_sum_missing_inputs_and_bad_formulas_are_config_errors():
    pred, target = batch(0)
    with pytest.raises(ConfigError, match="temperature_mse.*teacher"):
        WeightedSum("hybrid + 0.5*temperature_mse")(pred, target, student_logits=pred)
    with pytest.raises(ConfigError, match="labelled"):
        WeightedSum("mse")(pred, None)
    with pytest.raises(ConfigError, match="pair"):
        WeightedSum("adaptive_margin")(pred, target)
    for bad in ["1.0*", "0.5 hybrid", "mse +", "1.0*mse + 2*mse", ""]:
        with pytest.raises(ConfigError):
            WeightedSum(bad)
    with pytest.raises(ConfigError, match="unknown loss"):
        WeightedSum("1*msee")
    assert parse_formula("mse + 2e-1*rank + 1e+1 * feature") == {"mse": 1.0, "rank": 0.2, "feature": 10.0}


def test_plcc_on_constant_predictions_is_one_with_a_bounded_gradient_towards_target_order():
    target = [0.2, 0.9, 0.4, 0.5]
    pred = torch.full((4,), 0.3, dtype=torch.float64, requires_grad=True)
    value = PLCCLoss()(pred, torch.tensor(target, dtype=torch.float64))
    value.backward()
    mean = sum(target) / 4
    norm = math.sqrt(sum((v - mean) ** 2 for v in target))
    assert value.item() == 1.0
    assert pred.grad.tolist() == pytest.approx([-(v - mean) / norm for v in target], rel=1e-12)


@pytest.mark.parametrize("name", ["mse", "l1", "plcc", "hybrid", "plcc_nin", "temperature_mse"])
def test_an_empty_batch_is_an_error_not_a_nan_or_a_constant(name):
    from kdfiqa.losses import create_loss

    with pytest.raises(ValueError, match="empty"):
        create_loss(name)(torch.empty(0, 1), torch.empty(0, 1))


@pytest.mark.parametrize("formula", ["-1*mse", "0*mse", "1.0*hybrid + -0.5*temperature_mse"])
def test_a_loss_term_whose_weight_is_not_positive_is_refused(formula):
    from kdfiqa.losses import WeightedSum, parse_formula

    with pytest.raises(ConfigError, match="give a weight > 0"):
        WeightedSum(parse_formula(formula))


def test_a_formula_term_carries_keyword_arguments_to_its_loss_and_prints_them():
    from kdfiqa.losses import WeightedSum, parse_formula

    assert parse_formula("0.5*temperature_mse(temperature=2) + hybrid( alpha = 0.5 ) + 1e+1*mse") == {
        "temperature_mse": {"weight": 0.5, "temperature": 2}, "hybrid": {"weight": 1.0, "alpha": 0.5}, "mse": 10.0}
    loss = WeightedSum("0.5*temperature_mse(temperature=2) + hybrid(alpha=0.5)")
    assert loss.terms["temperature_mse"].temperature == 2.0 and loss.terms["hybrid"].alpha == 0.5
    assert str(loss) == "Loss = 0.5 * temperature_mse(temperature=2) + 1.0 * hybrid(alpha=0.5)"
    again = WeightedSum(loss.formula)  # the formula reads back to the same terms
    assert (again.weights, again.options) == (loss.weights, loss.options)
    # the same loss built from a mapping, as before
    pred, target = torch.rand(8, 1), torch.rand(8, 1)
    zs, zt = torch.randn(8, 1), torch.randn(8, 1)
    mapped = WeightedSum({"temperature_mse": {"weight": 0.5, "temperature": 2}, "hybrid": {"weight": 1.0, "alpha": 0.5}})
    kw = dict(student_logits=zs, teacher_logits=zt)
    assert torch.equal(loss(pred, target, **kw)[0], mapped(pred, target, **kw)[0])


@pytest.mark.parametrize("formula, message", [
    ("hybrid(alpha=)", "cannot read the parameters"),
    ("hybrid(0.5)", "cannot read the parameters"),
    ("hybrid(alpha=0.5, alpha=0.6)", "gives 'alpha' twice"),
    ("hybrid(alpha=[1])", "a value must be"),
    ("hybrid(alpha=__import__('os').getcwd())", "cannot read term"),
    ("hybrid(alpha=abs(1))", "cannot read term"),
    ("hybrid(alpha=x)", "a value must be"),
    ("hybrid(alpha='x')", "alpha='x' must be a number"),
    ("hybrid(alpha=True)", "alpha=True must be a number"),
    ("hybrid(beta=1)", "unexpected keyword argument 'beta'; its parameters are: alpha"),
    ("0.5*temperature_mse(temperature=-1)", r"temperature=-1.0 is outside \(0.0, inf\)"),
    ("hybrid(weight=2)", "as WEIGHT\\*NAME"),
])
def test_a_formula_term_with_unreadable_or_refused_arguments_is_one_config_error(formula, message):
    from kdfiqa.losses import WeightedSum

    with pytest.raises(ConfigError, match=message) as info:
        WeightedSum(formula)
    assert "\n" not in str(info.value)
