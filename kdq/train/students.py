"""Student models by name, checked against the size limit before any training.

    model = build(spec.student, num_classes=10)     # kdq | timm | torchvision
    check_size(model, name, "int8")                  # StudentError when the exported file would not fit
    preflight(spec.student)                          # the same check at enqueue, on the meta device

``python -m kdq.train.students`` is that check in a process of its own (kdq.preflight runs it at
enqueue): JSON ``{key: student spec + "weights"}`` on stdin, ``{key: None or the error}`` on stdout.

``library="kdq"`` has ``tiny_cnn``: a few thousand parameters, trains in seconds on a CPU (tests,
demos). timm models are created with ``scriptable=True`` so that ``torch.jit.script`` works on them;
families with training-time branches (RepVGG, MobileOne, FastViT...) are reparameterized by
``timm.utils.reparameterize_model`` before they are measured and exported. ``pretrained = true`` (the
default) fetches ImageNet weights; when they cannot be fetched (offline) the run fails, or, with
``allow_scratch = true``, starts from scratch with a warning (``build_loaded`` says which).
The size limit is ``kdq.grader.MAX_MIB``, with ``grader.PARAM_HEADROOM`` for the file's code.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch
from torch import nn

from kdq import grader
from kdq.spec import StudentSpec
from kdq.train.quantize import file_mib


class StudentError(ValueError):
    pass


class TinyCNN(nn.Module):
    """Three conv blocks and a linear head: the smallest model that learns the synthetic data."""

    def __init__(self, num_classes: int = 10, width: int = 16, drop_rate: float = 0.0):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


KDQ_MODELS = {"tiny_cnn": TinyCNN}


def available(library: str) -> list[str]:
    if library == "kdq":
        return sorted(KDQ_MODELS)
    if library == "timm":
        import timm

        return timm.list_models()
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _unknown(spec: StudentSpec) -> StudentError:
    hint = {
        "kdq": f"choose one of: {', '.join(sorted(KDQ_MODELS))}",
        "timm": "list them with `python -c \"import timm; print(timm.list_models('*mobile*'))\"`",
        "torchvision": "list them with "
        '`python -c "import torchvision; print(torchvision.models.list_models())"`',
    }[spec.library]
    return StudentError(f"student.name = {spec.name!r} is not a {spec.library} model; {hint}")


def build(spec: StudentSpec, num_classes: int) -> nn.Module:
    return build_loaded(spec, num_classes)[0]


def build_loaded(spec: StudentSpec, num_classes: int) -> tuple[nn.Module, bool]:
    """The student, and whether it starts from pretrained weights. When they cannot be fetched the build
    fails (``StudentError``) unless ``student.allow_scratch``: then it starts from scratch, warned."""
    if spec.library == "kdq":  # no pretrained weights exist for kdq's own models
        if spec.name not in KDQ_MODELS:
            raise _unknown(spec)
        return KDQ_MODELS[spec.name](num_classes=num_classes, drop_rate=spec.drop_rate), False
    make = _timm(spec, num_classes) if spec.library == "timm" else _torchvision(spec, num_classes)
    if spec.wants_weights:
        try:
            return make(True), True
        except Exception as exc:  # noqa: BLE001 — offline, gated, no weights: all mean "none to start from"
            why = f"{spec.library} {spec.name}: pretrained weights unavailable ({type(exc).__name__}: "
            why += f"{str(exc)[:200]})"
            if not spec.allow_scratch:
                raise StudentError(
                    f"{why}; set student.allow_scratch = true to train from scratch, "
                    "or student.pretrained = false"
                ) from exc
            warnings.warn(f"{why}; training from scratch (student.allow_scratch)", stacklevel=2)
    return make(False), False


def _timm(spec: StudentSpec, num_classes: int):
    import timm

    if spec.name.split(".")[0] not in timm.list_models():  # "name.pretrained_tag" is fine too
        raise _unknown(spec)
    kw = dict(num_classes=num_classes, drop_rate=spec.drop_rate, scriptable=True)
    return lambda pretrained: timm.create_model(spec.name, pretrained=pretrained, **kw)


def _torchvision(spec: StudentSpec, num_classes: int):
    import torchvision

    if spec.name not in available("torchvision"):
        raise _unknown(spec)

    def make(pretrained: bool) -> nn.Module:
        model = torchvision.models.get_model(spec.name, weights="DEFAULT" if pretrained else None)
        return _new_head(model, num_classes, spec.drop_rate)

    return make


def _new_head(model: nn.Module, num_classes: int, drop_rate: float) -> nn.Module:
    head = classifier(model)
    new = nn.Linear(head.in_features, num_classes)
    _replace(model, head, new)
    if drop_rate:
        _replace(model, new, nn.Sequential(nn.Dropout(drop_rate), new))
    return model


def classifier(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of the model: its classifier (its input is the pooled feature)."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise StudentError(f"{type(model).__name__} has no nn.Linear classifier to replace or hook")
    return last


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for mod in root.modules():
        for child_name, child in mod.named_children():
            if child is old:
                setattr(mod, child_name, new)
                return
    raise StudentError("could not find the classifier to replace")


def check_size(model: nn.Module, name: str, weights: str = "fp32", max_mb: float = grader.MAX_MIB) -> float:
    """The exported file's weights in MiB as ``weights`` stores them (after reparameterization), or
    ``StudentError`` when over the limit."""
    import copy

    model = reparameterize(copy.deepcopy(model).cpu().eval())
    if file_mib(model, weights) > max_mb * grader.PARAM_HEADROOM:
        _too_large(model, name, weights, max_mb)
    return file_mib(model, weights)


def _too_large(model: nn.Module, name: str, weights: str, max_mb: float) -> None:
    params = sum(p.numel() for p in model.parameters())
    raise StudentError(
        f"student {name!r} has {params / 1e6:.1f}M parameters = {file_mib(model, weights):.1f} MiB in "
        f"{weights}, over the {max_mb} MiB limit of the course server; choose a smaller model (e.g. "
        f"torchvision shufflenet_v2_x1_0, mobilenet_v3_large; timm mobilenetv4_conv_small, efficientnet_b0)"
        + ("" if weights == "int8" else " or set export.weights = 'int8'")
    )


def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse training-time branches (RepVGG/MobileOne-style) when the model has them."""
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model)


def preflight(
    spec: StudentSpec, weights: str = "fp32", num_classes: int = 10, max_mb: float = grader.MAX_MIB
) -> float:
    """Check a student spec without training (at enqueue time): the name exists and the exported file's
    size in ``weights`` is under the limit. Returns the size in MiB or raises ``StudentError``."""
    spec = spec.model_copy(update={"pretrained": False})
    with torch.device("meta"):  # no memory, no weights, no init: just the shapes
        model = build(spec, num_classes)
    if file_mib(model, weights) <= max_mb * grader.PARAM_HEADROOM:
        return file_mib(model, weights)  # reparameterization only ever shrinks a model
    if file_mib(model, weights) > 8 * max_mb:  # not even reparameterization (at most ~4x smaller) helps
        _too_large(model, spec.name, weights, max_mb)
    return check_size(build(spec, num_classes), spec.name, weights, max_mb)


def main() -> None:
    """Verdicts for the students on stdin (see the module's docstring). It ends with ``os._exit``: the
    teardown of torch and torchvision at a normal exit takes longer (0.75 s here) than the check."""
    verdicts: dict[str, str | None] = {}
    for key, fields in json.load(sys.stdin).items():
        try:
            weights = fields.pop("weights", "fp32")
            preflight(StudentSpec.model_validate(fields), weights)
            verdicts[key] = None
        except StudentError as exc:
            verdicts[key] = str(exc)
    sys.stdout.write(json.dumps(verdicts))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
