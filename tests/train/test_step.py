import pytest
import torch

from kdq.spec import DistillSpec, StudentSpec, TrainSpec
from kdq.train import augment, students
from kdq.train import step as step_module
from kdq.train.step import Step
from kdq.train.teacher import Targets


def _step(
    device: str, fresh_fraction: float = 0.25, loss: str = "hinton", ema_decay: float | None = None
) -> tuple[Step, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step built as kdq.train.loop builds one; the model and its EMA are made on the CPU, then moved
    to ``device`` (timm's EMA makes a random generator on its model's device: none exists on meta)."""
    n, v, c = 12, 3, 10
    torch.manual_seed(0)
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), c)
    averaged = step_module.ema(model, ema_decay)
    model, averaged = model.to(device), averaged and averaged.to(device)
    feats = {}
    students.classifier(model).register_forward_hook(lambda m, i, o: feats.__setitem__("f", i[0]))
    proj = torch.nn.Linear(students.classifier(model).in_features, 8).to(device)
    params = list(model.parameters()) + list(proj.parameters())
    tr = TrainSpec(epochs=2, warmup_epochs=0.5)
    opt, sched = step_module.optimizer(tr, params, step_module.steps_per_epoch(tr, n))
    with torch.device(device):
        images = torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8)
        targets = Targets(
            torch.cat(
                [augment.identity(n).unsqueeze(1), augment.sample(n * (v - 1)).view(n, v - 1, -1)], 1
            ).to(device),
            torch.randn(n, v, 8).half(),
            torch.randn(n, v, c),
            0.5,
            v,
        )
        dist = DistillSpec(loss=loss, embed_weight=0.5, fresh_fraction=fresh_fraction)
        step = Step(
            model,
            model,
            opt,
            sched,
            averaged,
            proj,
            feats,
            params,
            images,
            torch.arange(n) % c,
            targets,
            dist,
            None,
            32,
            kd_warmup_steps=2,
        )
        idx, view = torch.arange(8), torch.randint(v, (8,))
        return step, idx, view, augment.sample(8).to(device)


def test_a_step_updates_the_student_and_mixes_teacher_views_and_fresh_crops():
    step, idx, view, fresh = _step("cpu")
    before = [p.clone() for p in step.params]
    parts, logits, y = step(idx, view, fresh)
    assert logits.shape == (8, 10) and torch.equal(y, step.labels[idx])
    assert {"loss", "ce", "kd", "embed"} <= set(parts) and torch.isfinite(parts["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, step.params))


@pytest.mark.parametrize("loss", ["ce", "hinton", "dkd", "dist"])
def test_a_step_reads_nothing_back_from_the_device(loss):
    """On the meta device every read-back (bool, item, a copy to the host, a boolean mask's count)
    raises: a CUDA step that passes here never waits for the GPU. Every loss, with the EMA on."""
    step, idx, view, fresh = _step("meta", loss=loss, ema_decay=0.99)
    for _ in range(3):  # the KD warm-up and the EMA's first copy, then its average
        parts, logits, _ = step(idx, view, fresh)
    assert logits.device.type == "meta" and parts["loss"].device.type == "meta"
    assert {t.device.type for t in step.ema.state_dict().values()} == {"meta"}  # no counter on the host


def test_the_ema_follows_the_weights_on_their_device():
    step, idx, view, fresh = _step("cpu", ema_decay=0.9)
    step(idx, view, fresh)  # the first update copies the weights
    assert all(
        torch.equal(a, b)
        for a, b in zip(step.ema.module.state_dict().values(), step.model.state_dict().values())
    )
    for _ in range(3):
        step(idx, view, fresh)
    ema_w, w = step.ema.module.state_dict(), step.model.state_dict()
    moved = [k for k in w if w[k].is_floating_point() and not torch.equal(ema_w[k], w[k])]
    assert moved and all(ema_w[k].device == w[k].device for k in w)  # an average, kept beside the weights
