"""YAML loading that remembers where each value came from.

Config and rule files are both read through here, so every error a user sees reads
``path:line: field.path: what is wrong``, whichever file it is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from runwatch.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file; ``str()`` is the line a user reads."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FileProblems(ConfigError):
    """Raised with every problem found in one or more files (``problems``: a list of :class:`Problem`)."""

    problems: list[Problem]  # type: ignore[assignment]

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(problems)


def load(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file into ruamel's line-aware maps and lists; raise FileProblems if unreadable."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileProblems([Problem(shown, 0, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblems([Problem(shown, 0, "", f"cannot read: {exc}")]) from None
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or exc.context or "invalid YAML"
        raise FileProblems([Problem(shown, line, "", f"invalid YAML: {what}")]) from None
    except YAMLError as exc:
        raise FileProblems([Problem(shown, 0, "", f"invalid YAML: {exc}")]) from None


def line_of(root: Any, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node of ``loc`` that exists in ``root`` (0 if none)."""
    node = root
    line = 1 if isinstance(root, CommentedMap | CommentedSeq) else 0
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            # A key merged in with ``<<: *anchor`` has no position of its own: keep the parent's line.
            pos = node.lc.data.get(part) if isinstance(part, str) else None
            if pos is not None:
                line = pos[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def dotted(loc: Sequence[str | int]) -> str:
    """('rules', 1, 'match', 'to') -> 'rules[1].match.to'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def plain(node: Any) -> Any:
    """ruamel's line-aware containers -> plain dicts and lists (for pydantic)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def problems_from_validation(
    exc: Any, root: Any, display: str, prefix: Sequence[str | int] = ()
) -> list[Problem]:
    """A pydantic ValidationError -> one Problem per error, each with the line it points at."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = [*prefix, *(p for p in err["loc"] if isinstance(p, str | int))]
        # pydantic puts the tag of a union or the validator name in loc; keep only real keys.
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        out.append(Problem(display, line_of(root, loc), dotted(loc), msg))
    return out
