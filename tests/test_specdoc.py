from pathlib import Path

from kdq.spec import ExperimentSpec
from kdq.specdoc import render

DOC = Path(__file__).parents[1] / "docs" / "spec-reference.md"


def test_spec_reference_matches_the_models():
    assert DOC.read_text() == render(), (
        "docs/spec-reference.md is stale: python -m kdq.specdoc > docs/spec-reference.md"
    )


def test_every_field_is_documented():
    text = render()
    for section, field in ExperimentSpec.model_fields.items():
        assert f"`{section}`" in text or f"`[{section}]`" in text
        sub = getattr(field.annotation, "model_fields", {})
        for key in sub:
            assert f"| `{key}` |" in text
