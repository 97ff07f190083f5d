"""Fixtures for the course-server tests: a tiny labelled image folder, tiny TorchScript models,
a stand-in server on a free loopback port, and a client for it.

The class folders are chosen so that string order differs from numeric order ("1. a", "10. j",
"2. b"), which is how the real grader indexes its classes.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items):
    """torch warns that TorchScript is deprecated on every save and load; the course server needs it."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"))


CLASSES = ["1. red", "10. green", "2. blue"]  # sorted as strings: exactly this order
COUNTS = [2, 3, 4]  # images per class, in the order above
LEVELS = [40, 130, 220]  # the red channel of every image of each class


def make_token(seed: str = "0123456789abcdef") -> str:
    """A fake 32-hex token built at run time (no secret-looking literal in the repository)."""
    return (seed * 2)[:32]


@pytest.fixture
def token() -> str:
    return make_token()


@pytest.fixture
def layout() -> tuple[list[str], list[int]]:
    """The class folders and their image counts in ``dataset_dir``."""
    return CLASSES, COUNTS


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    """``train_dataset/train_dataset/<class>/*.png`` plus a ``__MACOSX`` folder of junk."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    classes = root / "train_dataset" / "train_dataset"
    for name, count, level in zip(CLASSES, COUNTS, LEVELS):
        (classes / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (37 + i, 29), (level, 60, 90)).save(classes / name / f"img{i}.png")
    junk = root / "__MACOSX" / "train_dataset" / "1. red"
    junk.mkdir(parents=True)
    (junk / "._img0.png").write_bytes(b"\x00\x05\x16\x07 junk")
    return root


def _save(module, path: Path) -> Path:
    import torch

    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """``perfect`` (reads the red level), ``const0`` (always index 0), ``wrong_shape``, ``broken``."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models")
    centers = torch.tensor([(v / 255 - 0.485) / 0.229 for v in LEVELS])

    class ByRed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("centers", centers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            red = x[:, 0].mean(dim=(1, 2))
            return -((red.unsqueeze(1) - self.centers.unsqueeze(0)) ** 2)

    class Const(torch.nn.Module):
        def __init__(self, n: int, k: int) -> None:
            super().__init__()
            self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(k), n).float())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.unsqueeze(0).repeat(x.shape[0], 1)

    broken = out / "broken.pt"
    broken.write_bytes(b"this is not a TorchScript archive")
    return {
        "perfect": _save(ByRed(), out / "perfect.pt"),
        "const0": _save(Const(3, 0), out / "const0.pt"),
        "wrong_shape": _save(Const(7, 0), out / "wrong_shape.pth"),
        "broken": broken,
    }


@pytest.fixture
def server(dataset_dir, token):
    from kdq.course.fake_server import FakeServer

    with FakeServer(
        teams={"Team Rocket": token, "Other": make_token("fedcba9876543210")},
        data_dir=dataset_dir,
        submit_interval_s=0,
        status_interval_s=0,
    ) as srv:
        yield srv


@pytest.fixture
def client(server, token):
    from kdq.course import CourseClient

    with CourseClient(
        server.url,
        token,
        "Team Rocket",
        backoff_s=0.01,
        max_backoff_s=0.05,
        connect_timeout_s=1,
        request_timeout_s=5,
    ) as c:
        yield c


@pytest.fixture
def make_server(dataset_dir, token):
    """A stand-in with chosen options: ``make_server(submit_interval_s=900)``; stopped after the test."""
    from kdq.course.fake_server import FakeServer

    started = []

    def make(**options):
        options = {"submit_interval_s": 0, "status_interval_s": 0, **options}
        srv = FakeServer(teams={"Team Rocket": token}, data_dir=dataset_dir, **options).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
