"""The exported file takes the grader's 224 input and resizes it to the training size inside."""

import torch
import torch.nn.functional as F

from kdq.spec import StudentSpec
from kdq.train import augment, export, students


def test_a_student_trained_at_48_sees_48_inside_the_file(tmp_path):
    torch.manual_seed(0)
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10).eval()
    export.save(model, tmp_path / "m.pt", train_size=48)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    pictures = torch.randint(0, 256, (3, 3, 300, 260), dtype=torch.uint8)
    grader_input = augment.render(pictures, None, 224)  # what the grader feeds: 224, normalized
    training_input = augment.render(pictures, None, 48)  # what training fed the student
    with torch.no_grad():
        got, want = loaded(grader_input), model(training_input)
        unresized = model(grader_input)
    inside = F.interpolate(grader_input, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(got, model(inside), atol=1e-5)  # the file resizes with the same filter
    assert (got - want).abs().max() < (unresized - want).abs().max()  # closer to training than without it
    assert loaded(torch.randn(1, 3, 224, 224)).shape == (1, 10) and loaded.train_size == 48


def test_a_student_trained_at_224_is_exported_as_it_is(tmp_path):
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10).eval()
    export.save(model, tmp_path / "m.pt")
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5) and loaded.train_size == 224
