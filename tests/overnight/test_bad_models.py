"""Bad model files, built at test time (no binary in the repository): each gets its own clear message
from ``kdq.verify.verify_file`` and from the worker's validating stage (the experiment fails with
that message), and none of them reaches the course server.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kdq.stages import Stage
from kdq.verify import VerifyError, verify_file

# what each file is → the words its message must contain
EXPECTED = {
    "not_torchscript": r"not a loadable TorchScript file .*torch\.jit\.save",
    "wrong_shape": r"output shape \[4, 7\] for a batch of 4; expected \[4, 10\]",
    "oversized": r"MiB, over the 23\.0 MiB limit; choose a smaller student",
    "fp16": r"parameters are float16; the server needs float32",
    "raises": r"forward on a \[4,3,224,224\] float32 batch failed: "
    r".*RuntimeError: this model refuses every batch",
    "nan": r"output has NaN or infinite values",
}


def _build(kind: str, path: Path) -> Path:
    import torch

    class Head(torch.nn.Module):
        def __init__(self, out: int = 10) -> None:
            super().__init__()
            self.head = torch.nn.Linear(3, out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3)))

    class Half(Head):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3)).half()).float()

    class Raises(Head):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 0:
                raise RuntimeError("this model refuses every batch")
            return self.head(x.mean(dim=(2, 3)))

    class NaN(Head):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.mean(dim=(2, 3))) * float("nan")

    class Big(Head):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("ballast", torch.zeros(6_300_000))  # 24 MiB of fp32

    torch.manual_seed(0)
    if kind == "not_torchscript":  # the usual mistake: torch.save of the weights
        torch.save(Head().state_dict(), str(path))
        return path
    module = {
        "wrong_shape": lambda: Head(7),
        "oversized": Big,
        "fp16": lambda: Half().half(),
        "raises": Raises,
        "nan": NaN,
    }[kind]()
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_models")
    return {kind: _build(kind, folder / f"{kind}.pt") for kind in EXPECTED}


def _message(path: Path) -> str:
    with pytest.raises(VerifyError) as info:
        verify_file(path)
    return str(info.value)


def test_each_bad_model_gets_its_own_clear_message(bad_models):
    with ThreadPoolExecutor(2) as pool:  # each check is a fresh process, as on the grader
        messages = dict(zip(bad_models, pool.map(_message, bad_models.values())))
    for kind, message in messages.items():
        assert message.startswith(f"{bad_models[kind]}: "), message  # names the file
        assert re.search(EXPECTED[kind], message), f"{kind}: {message}"
    assert len({m.split(": ", 1)[1] for m in messages.values()}) == len(EXPECTED)


@pytest.mark.slow
def test_worker_fails_each_bad_model_with_that_message_and_submits_none(overnight, bad_models, tiny_model):
    h = overnight()
    bad = {kind: h.place(path, stage=Stage.VALIDATING, name=kind) for kind, path in bad_models.items()}
    good = h.place(tiny_model, stage=Stage.VALIDATING, name="good")
    h.start_worker()
    h.wait_finished(180)
    for kind, exp_id in bad.items():
        exp = h.get(exp_id)
        assert exp.stage is Stage.FAILED, h.report()
        assert exp.error.startswith("model.pt fails the grader's checks: "), exp.error
        assert re.search(EXPECTED[kind], exp.error), f"{kind}: {exp.error}"
        assert exp.val_f1 is None and exp.server_attempt is None
        shown = h.cli("show", exp_id).stdout
        assert re.search(EXPECTED[kind], " ".join(shown.split())), shown
    h.check_delivered([good])  # the one good model went; the server saw nothing else
    assert [s.size_mb for s in h.server.course.submissions] == [
        pytest.approx(tiny_model.stat().st_size / 2**20, abs=1e-3)
    ]
    assert list(h.store.db.query("select count(*) n from submissions"))[0]["n"] == 1
