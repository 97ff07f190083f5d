"""The settings reference (docs/settings.md), generated from ``kdq.settings.Settings``.

python -m kdq.settingsdoc > docs/settings.md       (a test keeps the file in sync)
"""

from __future__ import annotations

from pydantic.fields import FieldInfo

from kdq.settings import Settings

HEADER = """# Settings

Generated from `kdq/settings.py` by `python -m kdq.settingsdoc`; a test fails when this page and the
code disagree, or when a doc names a `KDQ_*` variable that is not here.

Every setting is an environment variable, or a line of the `.env` file next to the home's `.kdq/`
folder (`KDQ_TEAM=uva-sleepers`), or of `$KDQ_HOME/.env` (a home's own, which wins: `kdq demo` keeps its
stand-in's there). The environment wins over both. A bad value is one line at the first
command, naming the variable and the fix. Secrets print as `**********` and never reach a log, an
error or the database. `kdq doctor` checks the ones a night needs.

| variable | default | what it does |
|---|---|---|
"""


def variable(name: str, field: FieldInfo) -> str:
    aliases = getattr(field.validation_alias, "choices", None)
    return " or ".join(f"`{a}`" for a in aliases) if aliases else f"`KDQ_{name.upper()}`"


def default(name: str, field: FieldInfo) -> str:
    if name == "home":
        return "the nearest `.kdq/` (or `.env`) above, else `./.kdq`"
    return "not set" if field.default is None else f"`{field.default}`"


def render() -> str:
    rows = [
        f"| {variable(n, f)} | {default(n, f)} | {(f.description or '').replace('|', '/')} |"
        for n, f in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
