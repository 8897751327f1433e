"""Every key of ``conf/`` with its default and its comment, read from the YAML files' own text:
the docs' generated configuration reference, and the test that keeps each key explained.

A key's comment is the ``# ...`` on its line, continued by comment lines indented under it;
Hydra's own ``defaults`` list and ``hydra:`` block are left out (they are not settings a user
gives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.\-@]*):(?P<rest>.*)$")
SKIPPED = ("defaults", "hydra")


@dataclass
class ConfigKey:
    """One key: the file (relative to ``conf/``), its dotted name, default and comment."""

    file: str
    key: str
    default: str
    comment: str


def split_comment(rest: str) -> tuple[str, str]:
    """A line's value and comment, a ``#`` inside quotes kept in the value.

    >>> split_comment(" auto   # where ids come from")
    ('auto', 'where ids come from')
    >>> split_comment(" '#fff'")
    ("'#fff'", '')
    """
    quote = None
    for i, char in enumerate(rest):
        if char in "'\"":
            quote = None if quote == char else quote or char
        elif char == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def file_keys(path: Path, name: str) -> list[ConfigKey]:
    """The keys of one YAML file, nested keys dotted (``queue.errors``)."""
    keys: list[ConfigKey] = []
    stack: list[tuple[int, str]] = []
    last: ConfigKey | None = None
    last_indent = -1
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and last is not None and len(line) - len(line.lstrip()) > last_indent:
            last.comment = f"{last.comment} {stripped.lstrip('#').strip()}".strip()
            continue
        match = KEY_LINE.match(line)
        if not match:
            if stripped and not stripped.startswith(("#", "-")):
                last = None
            continue
        indent, key = len(match["indent"]), match["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        value, comment = split_comment(match["rest"])
        stack.append((indent, key))
        if dotted.split(".")[0] in SKIPPED:
            last = None
            continue
        last, last_indent = ConfigKey(name, dotted, value, comment), indent
        keys.append(last)
    return keys


def config_keys(conf_dir: Path) -> list[ConfigKey]:
    """Every key of every YAML file under ``conf_dir``, file by file (sorted)."""
    found = []
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        found += file_keys(path, path.relative_to(conf_dir).as_posix())
    return found


def checked_as(key: ConfigKey, checks: dict[str, str]) -> str:
    """What the training settings check requires of ``key`` (``checks``: setting -> expected, as
    ``mammo.core.train_settings`` words it), ``""`` where it checks nothing. A group file's key is
    the setting under its group (``data/dicom_csv.yaml: val_fraction`` is ``data.val_fraction``),
    or a top-level one: a ``_global_`` group file's keys are (``debug/limit.yaml: epochs``), and
    a group's copy of a top-level setting (``model.learning_rate: ${learning_rate}``) is that
    setting, checked as it; an entry's own config other than ``train.yaml`` is not checked."""
    group = key.file.split("/")[0] if "/" in key.file else None
    if group is None and key.file != "train.yaml":
        return ""
    for setting in (key.key, f"{group}.{key.key}" if group else None):
        if setting in checks:
            return checks[setting]
    return ""


def reference_markdown(conf_dir: Path, checks: dict[str, str] | None = None) -> str:
    """The reference: a section per config file (a group's options under the group), a table of
    its keys with default, comment and (``checks``) what a training run's settings check requires."""
    lines: list[str] = []
    keys = config_keys(conf_dir)
    for name in dict.fromkeys(k.file for k in keys):
        group, _, option = name.removesuffix(".yaml").rpartition("/")
        title = f"`{group}={option}`" if group else f"`{option}.yaml` (an entry's config)"
        lines += [
            "",
            f"### {title}",
            "",
            f"`conf/{name}`",
            "",
            "| key | default | what it is | checked: must be |",
        ]
        lines.append("| --- | --- | --- | --- |")
        for key in (k for k in keys if k.file == name):
            default = key.default.replace("|", "\\|") or "(a block)"
            comment = key.comment.replace("|", "\\|") or "—"
            checked = checked_as(key, checks or {}).replace("|", "\\|")
            lines.append(f"| `{key.key}` | `{default}` | {comment} | {checked} |")
    return "\n".join(lines) + "\n"
