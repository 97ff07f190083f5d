"""The command-line reference (docs/cli-reference.md), generated from every command's ``--help``.

python -m kdq.cli.reference > docs/cli-reference.md       (a test keeps the file in sync)
"""

from kdq.cli.common import ERROR, OK, RATE_LIMITED, UNREACHABLE, USAGE

WIDTH = 100
EXIT_CODES = [
    (OK, "ok"),
    (ERROR, "an error: the message says what failed and what to do (a failed doctor check, a bad spec, ...)"),
    (USAGE, "a usage error: an unknown option or value, a bad `KDQ_*` setting"),
    (RATE_LIMITED, "the course server is rate limiting us: the message says when to try again"),
    (UNREACHABLE, "the course server is unreachable (off the VPN? for the stand-in: is it running?)"),
]
HEADER = """# Command-line reference

Generated from every command's `--help` by `python -m kdq.cli.reference`; a test fails when this file
and the commands disagree. Every command takes `-h`; `kdq --version` prints the version.

## Exit codes

The same for every command:

| code | meaning |
|---|---|
{codes}

## Where the state is

`KDQ_HOME` if set; otherwise the nearest folder, from the current one upwards, that holds a `.kdq/`
folder or a `.env` file (its `.kdq/` is the home and its `.env` is read); otherwise `./.kdq`. The
commands that only look (`status`, `show`, `results`, `report`, `compare`) create nothing and say
where they looked when there is nothing there.

## Output for people and for programs

On a terminal, tables fit its width. Piped or redirected, `status`, `results`, `leaderboard` and
`server status` print tab-separated rows with a header line and every value whole (`kdq status |
grep hinton`); `--json` gives every value in full precision.
"""


def _context(cmd, name: str, parent=None):
    """The command's own context class (typer carries its own click), at a fixed width."""
    return cmd.context_class(
        cmd,
        info_name=name,
        parent=parent,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        help_option_names=["-h", "--help"],
    )


def _sections(cmd, ctx, path: str):
    yield f"## {path}\n\n```\n{cmd.get_help(ctx).rstrip()}\n```\n"
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _sections(sub, _context(sub, name, ctx), f"{path} {name}")


def render() -> str:
    import typer

    from kdq.cli.main import app

    root = typer.main.get_command(app)
    codes = "\n".join(f"| {code} | {meaning} |" for code, meaning in EXIT_CODES)
    return "\n".join([HEADER.format(codes=codes), *_sections(root, _context(root, "kdq"), "kdq")])


if __name__ == "__main__":
    print(render(), end="")
