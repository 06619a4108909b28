"""`distill`: KD fine-tuning recovers a damaged student; bad teachers and NaN losses stop cleanly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.pipeline.distill import Distill, DistillConfig
from edgeship.pipeline.prune import Prune, PruneConfig
from edgeship.pipeline.training import NonFiniteLoss, evaluate, kd_loss


def test_kd_loss_is_the_documented_mix():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))

    class Fixed(nn.Module):
        def forward(self, x):
            return t

    teacher = Fixed()
    ce = nn.functional.cross_entropy(s, y)
    kl = (nn.functional.softmax(t / 2, 1) * (nn.functional.log_softmax(t / 2, 1)
                                              - nn.functional.log_softmax(s / 2, 1))).sum(1).mean()
    got = kd_loss(teacher, alpha=0.3, temperature=2.0)(s, y, None)
    assert torch.isclose(got, 0.7 * ce + 0.3 * 4 * kl, atol=1e-6)
    assert torch.isclose(kd_loss(teacher, 0.0, 2.0)(s, y, None), ce)


def test_distillation_recovers_a_pruned_student(digits_ctx):
    model, ctx = digits_ctx
    student = Prune().run(model, PruneConfig(macs_ratio=0.4, round_to=2, fine_tune={"epochs": 0}), ctx).model
    before = evaluate(student, ctx.data["val"])
    out = Distill().run(student, DistillConfig(epochs=6, lr=3e-3, alpha=0.7, temperature=4.0), ctx)
    after = evaluate(out.model, ctx.data["val"])
    assert after > before + 0.05 and after >= 0.8, (before, after)
    assert out.metrics["alpha"] == 0.7 and len(out.metrics["val_top1_per_epoch"]) == 6


def test_a_named_teacher_checkpoint(digits_ctx, digits_checkpoint):
    model, ctx = digits_ctx
    ctx.teacher = None
    cfg = DistillConfig(epochs=1, teacher={"zoo": "small_cnn", "args": {"width": 8}, "weights": str(digits_checkpoint)})
    out = Distill().run(model, cfg, ctx)
    assert out.metrics["epochs"] == 1


def test_teacher_with_other_outputs_is_bad_input(digits_ctx):
    model, ctx = digits_ctx
    ctx.teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(EdgeshipError, match=r"1:test: teacher outputs \(5,\) but the student outputs \(10,\)"):
        Distill().run(model, DistillConfig(epochs=1), ctx)


def test_nan_loss_names_stage_and_epoch(digits_ctx):
    model, ctx = digits_ctx
    ctx.stage = "2:distill"
    with pytest.raises(NonFiniteLoss, match=r"2:distill: the loss became NaN/inf in epoch 1"):
        Distill().run(model, DistillConfig(epochs=2, lr=1e30, optimizer="sgd"), ctx)


def test_teacher_logits_are_computed_once_per_row_and_equal_a_direct_forward(digits_ctx):
    """Prune's steps, distill and QAT share the teacher's logits: each training row runs through the teacher once
    per run, and what a pass gets is what the teacher computes for those rows."""
    from edgeship.pipeline.training import predict, subset_index, teacher_logits

    model, ctx = digits_ctx
    calls = []
    handle = ctx.teacher.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    n = len(ctx.data["train"])
    a = subset_index(n, 200, 1)
    b = subset_index(n, 300, 2)
    got_a = teacher_logits(ctx, ctx.teacher, a)
    got_b = teacher_logits(ctx, ctx.teacher, b)
    got_all = teacher_logits(ctx, ctx.teacher, None)
    handle.remove()
    # every row once, however the subsets overlapped (+ predict's one-sample layout probe per call)
    assert n <= sum(calls) <= n + 3
    want = predict(ctx.teacher, ctx.data["train"].x)
    for rows, got in ((a, got_a), (b, got_b), (torch.arange(n), got_all)):
        torch.testing.assert_close(got, want[rows], rtol=1e-4, atol=1e-4)
    other = copy.deepcopy(ctx.teacher)  # another teacher gets its own logits
    torch.testing.assert_close(teacher_logits(ctx, other, a), predict(other, ctx.data["train"].x[a]))
