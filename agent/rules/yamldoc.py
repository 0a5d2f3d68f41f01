"""Compose rules.yaml into plain data with positions, ${ENV} interpolated, secrets kept hidden."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from agent.errors import Problem, star_out
from agent.rules.fields import SECRET_KEYS

KeyPath = tuple[str | int, ...]

# YAML 1.2 core schema nulls; every other scalar stays a string (see schema.py).
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_ENV_REF = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
# rules.yaml nests six levels deep and has a few hundred nodes; far beyond that is a mistake
# (or aliases expanding exponentially), and reading it must not exhaust the stack or memory.
_MAX_DEPTH = 64
_MAX_NODES = 50_000


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Document:
    """The YAML tree as plain data plus where every key and value sits."""

    def __init__(self, filename: str, env: Mapping[str, str]):
        self.filename = filename
        self.env = env
        self.keys: dict[KeyPath, Mark] = {}
        self.values: dict[KeyPath, Mark] = {}
        self.block: set[KeyPath] = set()  # values written as block scalars (| or >)
        self.problems: list[Problem] = []
        self.unresolved: set[KeyPath] = set()  # ${...} failed here: do not pile on more
        self.interpolated: set[KeyPath] = set()  # values taken from the environment
        # Never shown in a message about this path, an ancestor or a descendant: environment
        # values (and scalars built from them) and values of secret keys.
        self.hidden: dict[KeyPath, set[str]] = {}
        self.nodes = 0
        self.refused = False  # over _MAX_NODES or _MAX_DEPTH: said once, the rest is skipped
        self.open: set[int] = set()  # ids of the nodes being built, to spot recursive aliases

    def problem(self, mark: Mark | None, path: KeyPath, message: str) -> None:
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        message = self._redact(path, message)
        self.problems.append(Problem(self.filename, line, col, format_path(path), message))

    def hide(self, path: KeyPath, value: str) -> None:
        if value:
            self.hidden.setdefault(path, set()).add(value)

    def redact(self, message: str) -> str:
        """``message`` with every hidden value (environment, secret keys) starred out: for
        problems found after loading, about values that may have come from anywhere."""
        return self._redact((), message)

    def _redact(self, path: KeyPath, message: str) -> str:
        # Validators quote values in many shapes (repr, a part after "-" or "/", upper-cased),
        # so each hidden value goes in every form; a message about a mapping may quote a value
        # inside it, and one about a value may quote what the mapping holds.
        for where, values in self.hidden.items():
            n = min(len(where), len(path))
            if where[:n] != path[:n]:
                continue
            for value in sorted(values, key=len, reverse=True):
                for form in sorted({value, repr(value)[1:-1]}, key=len, reverse=True):
                    message = star_out(form, message)
        return message

    def at(self, path: KeyPath, message: str, *, key: bool = False) -> None:
        """Report at the value (or key) for ``path``, else its nearest located ancestor."""
        if path in self.unresolved:
            return
        probe = path
        while probe:
            mark = (self.keys if key else self.values).get(probe) or self.values.get(probe)
            if mark is not None:
                self.problem(mark, path, message)
                return
            probe = probe[:-1]
        self.problem(self.values.get(()), path, message)

    def build(self, node: Node, path: KeyPath, loader: yaml.SafeLoader) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
            if not self.refused:
                self.refused = True
                self.problem(
                    node.start_mark,
                    path,
                    f"more than {_MAX_NODES} values (are aliases expanding?)"
                    if self.nodes > _MAX_NODES
                    else f"nested more than {_MAX_DEPTH} levels deep",
                )
            return None
        self.values[path] = node.start_mark
        if isinstance(node, ScalarNode):
            if node.style is None and node.value in _NULL:
                return None
            if node.style in ("|", ">"):
                self.block.add(path)
            value = self._interpolate(node, path)
            if path in self.interpolated or any(
                isinstance(p, str) and p in SECRET_KEYS for p in path
            ):
                self.hide(path, value)
            return value
        if id(node) in self.open:
            self.problem(node.start_mark, path, "a YAML alias refers to a node that contains it")
            return None
        self.open.add(id(node))
        try:
            return self._build_collection(node, path, loader)
        finally:
            self.open.discard(id(node))

    def _build_collection(self, node: Node, path: KeyPath, loader: yaml.SafeLoader) -> Any:
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), loader) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            own = {id(k) for k, _ in node.value}
            loader.flatten_mapping(node)  # YAML merge keys (<<: *base)
            out: dict[str, Any] = {}
            first: dict[str, Mark] = {}  # keys written in this mapping (not merged in)
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    self.problem(key_node.start_mark, path, "a key must be plain text")
                    continue
                key = key_node.value
                if key in first:
                    where = f"line {first[key].line + 1}"
                    self.problem(
                        key_node.start_mark,
                        (*path, key),
                        f"duplicate key {key!r} (first at {where})",
                    )
                    continue
                if id(key_node) in own:  # a merged key comes first and may be overridden
                    first[key] = key_node.start_mark
                self.keys[(*path, key)] = key_node.start_mark
                out[key] = self.build(value_node, (*path, key), loader)
            return out
        raise AssertionError(f"unexpected YAML node {node!r}")

    def _interpolate(self, node: ScalarNode, path: KeyPath) -> str:
        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            where = _no_env_here(path, node.value, m.start())
            if where is not None:
                self.problem(node.start_mark, path, where)
                self.unresolved.add(path)
                return ""
            body = _ENV_BODY.fullmatch(m.group(1))
            if body is None:
                self.problem(
                    node.start_mark,
                    path,
                    f"bad reference ${{{m.group(1)}}}: expected ${{NAME}} or ${{NAME:-default}}",
                )
                self.unresolved.add(path)
                return ""
            name, default = body.group(1), body.group(2)
            value = self.env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problem(node.start_mark, path, f"environment variable {name} is not set")
                    self.unresolved.add(path)
                    return ""
                return default
            self.hide(path, value)
            return value

        value = _ENV_REF.sub(replace, node.value)
        if value != node.value:
            self.interpolated.add(path)
        return value


def _no_env_here(path: KeyPath, raw: str, at: int) -> str | None:
    """Why an environment reference may not stand at ``at`` in this value, or None.
    A template's text goes into every SMS (a ${SECRET} there would be texted to callers), and
    a URL's path and query are logged with every error; the host and port may come from the
    environment."""
    if len(path) == 3 and path[0] == "templates" and path[2] == "text":
        return ("an environment reference in a template's text would be sent in every SMS; "
                "write $$ for a literal $")
    if len(path) == 3 and path[0] == "gateways" and path[2] == "url":
        start = raw.find("://")
        end = raw.find("/", start + 3) if start >= 0 else -1
        if end >= 0 and at > end:
            return ("an environment reference in a URL's path or query ends up in logs; put "
                    "secrets in password, auth_token or headers")
    return None


def compose(text: str, doc: Document) -> Any:
    """The data in ``text``, or None when YAML syntax stops the reading (said in ``doc``)."""
    try:
        # The reader refuses non-printable characters as it is created, with an offset only.
        loader = yaml.SafeLoader(text)
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        doc.problem(
            Mark(doc.filename, exc.position, line, column, None, None),
            (),
            f"YAML syntax: character {char!r} is not allowed in YAML",
        )
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            doc.problem(None, (), "the file is empty")
            return None
        return doc.build(node, (), loader)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        doc.problem(mark, (), f"YAML syntax: {exc.problem or exc.context}")
        return None
    except RecursionError:  # PyYAML composes nested collections recursively
        doc.problem(loader.get_mark(), (), "YAML syntax: collections nested too deeply")
        return None
    finally:
        loader.dispose()

