import pytest
import torch

from kdq.spec import StudentSpec
from kdq.train import export, students
from kdq.train.quantize import file_mib
from kdq.verify import check


def test_tiny_cnn_builds_and_exports(tmp_path):
    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    mb = export.save(model, tmp_path / "m.pt", bias=torch.arange(10.0), tta="hflip")
    assert mb < 1
    report = check(tmp_path / "m.pt")
    assert report["output_shape"] == [4, 10]
    # bias and flip averaging are inside the file
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(1, 3, 224, 224)
    model.eval()
    with torch.no_grad():
        want = 0.5 * (model(x) + model(torch.flip(x, dims=[3]))) + torch.arange(10.0)
        assert torch.allclose(loaded(x), want, atol=1e-5)


def test_spec_knows_the_kdq_models():
    from pydantic import ValidationError

    from kdq.spec import KDQ_STUDENTS

    assert tuple(sorted(students.KDQ_MODELS)) == tuple(sorted(KDQ_STUDENTS))
    with pytest.raises(ValidationError, match="'resnet9000' is not a kdq model; choose one of: tiny_cnn"):
        StudentSpec(library="kdq", name="resnet9000")


@pytest.mark.parametrize("library, name", [("torchvision", "not_a_net"), ("timm", "nope_net")])
def test_unknown_names_say_how_to_list_valid_ones(library, name):
    with pytest.raises(students.StudentError, match=f"{name}.*(choose one of|list them with)"):
        students.build(StudentSpec(library=library, name=name), 10)


def test_torchvision_student_gets_a_fresh_head_offline():  # pretrained = false: no download here
    model = students.build(
        StudentSpec(library="torchvision", name="shufflenet_v2_x0_5", drop_rate=0.1, pretrained=False), 10
    )
    assert students.classifier(model).out_features == 10
    assert students.check_size(model, "shufflenet_v2_x0_5") < 23


def test_timm_student_scripts_and_reparameterizes(tmp_path):
    model = students.build(StudentSpec(library="timm", name="mobileone_s0", pretrained=False), 10)
    deployed = students.check_size(model, "mobileone_s0")
    assert deployed < file_mib(model)  # the training-time branches are fused for export
    mb = export.save(model, tmp_path / "m.pt")
    assert abs(mb - deployed) < 0.5 and check(tmp_path / "m.pt")["output_shape"] == [4, 10]


def test_timm_names_may_carry_a_pretrained_tag():
    model = students.build(
        StudentSpec(library="timm", name="mobilenetv4_conv_small.e2400_r224_in1k", pretrained=False), 10
    )
    assert students.classifier(model).out_features == 10


def test_too_large_students_fail_before_training():
    model = students.build(StudentSpec(library="torchvision", name="resnet50", pretrained=False), 10)
    with pytest.raises(students.StudentError, match=r"resnet50.*M parameters.*MiB.*over the 23.0 MiB limit"):
        students.check_size(model, "resnet50")


def test_preflight_checks_names_and_sizes_without_training():
    assert students.preflight(StudentSpec(library="torchvision", name="shufflenet_v2_x1_0")) < 6
    assert (
        students.preflight(StudentSpec(library="timm", name="mobileone_s0")) < 23
    )  # an upper bound: unfused
    with pytest.raises(students.StudentError, match="over the"):
        students.preflight(StudentSpec(library="torchvision", name="resnet50"))
    with pytest.raises(students.StudentError, match="not a timm model"):
        students.preflight(StudentSpec(library="timm", name="mobilenet_v99"))


def test_pretrained_weights_that_cannot_be_fetched_fail_the_build_unless_scratch_is_allowed(monkeypatch):
    import timm
    import torchvision

    real_timm, real_tv = timm.create_model, torchvision.models.get_model

    def offline_timm(name, pretrained=False, **kw):
        if pretrained:
            raise ConnectionError("hub unreachable")
        return real_timm(name, pretrained=False, **kw)

    def offline_tv(name, weights=None, **kw):
        if weights:
            raise ConnectionError("download.pytorch.org unreachable")
        return real_tv(name, weights=None, **kw)

    monkeypatch.setattr(timm, "create_model", offline_timm)
    monkeypatch.setattr(torchvision.models, "get_model", offline_tv)
    for library, name in (("timm", "mobilenetv4_conv_small"), ("torchvision", "shufflenet_v2_x0_5")):
        spec = StudentSpec(library=library, name=name)  # pretrained by default
        with pytest.raises(students.StudentError, match="unavailable.*student.allow_scratch = true"):
            students.build_loaded(spec, 10)
        with pytest.warns(UserWarning, match="pretrained weights unavailable.*from scratch"):
            model, loaded = students.build_loaded(spec.model_copy(update={"allow_scratch": True}), 10)
        assert students.classifier(model).out_features == 10 and loaded is False
        assert students.build_loaded(spec.model_copy(update={"pretrained": False}), 10)[1] is False


def test_pretrained_weights_that_load_are_recorded(monkeypatch):
    import timm

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: real(name, **kw))
    model, loaded = students.build_loaded(StudentSpec(library="timm", name="mobilenetv4_conv_small"), 10)
    assert loaded is True and students.classifier(model).out_features == 10
    assert students.build_loaded(StudentSpec(library="kdq", name="tiny_cnn"), 10)[1] is False  # none exist


def test_export_scripts_a_model_that_still_has_training_hooks(tmp_path):
    import warnings

    model = students.build(StudentSpec(library="kdq", name="tiny_cnn"), 10)
    seen = {}
    students.classifier(model).register_forward_hook(lambda m, i, o: seen.__setitem__("f", i[0]))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*tracing instead")
        export.save(model, tmp_path / "m.pt")
    assert torch.jit.load(str(tmp_path / "m.pt"))(torch.randn(1, 3, 224, 224)).shape == (1, 10)


def test_a_student_too_large_in_fp32_fits_in_int8_and_is_priced_so():
    spec = StudentSpec(library="torchvision", name="efficientnet_b3")  # 10.7M parameters: 41.2 MiB in fp32
    with pytest.raises(students.StudentError, match=r"41\.2 MiB in fp32.*export\.weights = 'int8'"):
        students.preflight(spec, "fp32")
    assert 10 < students.preflight(spec, "int8") < 12
