"""Masked sites for `flashls bench repo`: lines of real multi-file Python projects whose
completion needs a name defined in another file of the same project, and the other files an
editor would have open beside them. Plain data from `ast`; nothing here talks to a server.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import io
import os
import random
import sysconfig
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flashls.bench.trace import MAX_FILE_BYTES, SKIPPED_DIRS, read_source, split_lines, utf16_length

# Installed packages flashls's defaults were not tuned on, all of them dependencies of
# flashls (so present wherever it is installed): the default projects.
HELD_OUT_PROJECTS = ("pygls", "h11", "httpx", "cattrs")
# Standard-library packages, the ones flashls's defaults were tuned on.
STDLIB_PROJECTS = ("email", "asyncio", "logging", "importlib", "json", "http", "unittest")
PROJECT_SETS = {"held-out": HELD_OUT_PROJECTS, "stdlib": STDLIB_PROJECTS}
DEFAULT_PER_FILE_MAX = 10
DEFAULT_OPEN_FILES = 4


@dataclass(frozen=True)
class Module:
    """One file of a project: its dotted name, what it defines at module level, and which
    names and modules of the project it imports."""

    name: str
    path: str
    is_package: bool
    definitions: frozenset[str]
    # local name -> (project module, name defined there), e.g. `quote` -> (`email.utils`, `quote`)
    imported_names: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False)
    # local name -> project module, e.g. `utils` -> `email.utils`
    imported_modules: dict[str, str] = field(default_factory=dict, compare=False)
    imports: tuple[str, ...] = ()  # project modules it imports from, first import first


@dataclass(frozen=True)
class Project:
    """A directory of Python files; modules are named from the directory's parent."""

    name: str
    root: str
    modules: dict[str, Module] = field(compare=False)


@dataclass(frozen=True)
class Site:
    """One masked place: the rest of `line` from the cursor is removed and is the target.

    The cursor sits right before the first use on the line of `name`, a name the file
    imports from `defined_in`, another file of the same project.
    """

    project: str
    root: str
    path: str
    module: str
    line: int  # 0-based
    character: int  # UTF-16 code units, as LSP counts them
    target: str  # the rest of the line from the cursor, without its line ending
    name: str
    defined_in: str  # the path of the file defining `name`
    defining_module: str
    # An auto-closed site (`auto_closed`): the original text from the cursor to the line's
    # end, and what the masked line keeps after the cursor (the editor's closing bracket).
    rest: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class _Use:
    line: int  # 0-based
    index: int  # Python str index in the line
    name: str
    module: str  # the project module defining `name`


# The project and its modules


def default_projects(project_set: str = "held-out") -> list[str]:
    """The directories of a set of projects (PROJECT_SETS) this Python has: `held-out`,
    the installed packages; `stdlib`, standard-library packages."""
    if project_set == "stdlib":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return [str(stdlib / name) for name in STDLIB_PROJECTS if (stdlib / name).is_dir()]
    found = (package_directory(name) for name in PROJECT_SETS[project_set])
    return [directory for directory in found if directory is not None]


def package_directory(name: str) -> str | None:
    """Where the installed package `name` is, found as `import` would find it (not
    imported); None for a missing package or a single-file module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return str(Path(locations[0]).resolve()) if locations else None


def project_files(root: str) -> list[str]:
    """The project's `.py` files, sorted; tests and files over MAX_FILE_BYTES left out."""
    found = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories
                                   if name not in SKIPPED_DIRS and not name.startswith("."))
        for name in sorted(names):
            path = os.path.abspath(os.path.join(directory, name))
            if name.endswith(".py") and os.path.getsize(path) <= MAX_FILE_BYTES:
                found.append(path)
    return sorted(found)


def module_name(root: str, path: str) -> str:
    """`email/_header_value_parser.py` -> `email._header_value_parser`; a package's
    `__init__.py` is the package."""
    relative = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(root)).parent)
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if relative.name == "__init__.py" else parts)


def import_name(path: str) -> str:
    """The name a file is imported by: from the first directory above it that is not a
    package (`checkout/src/pkg/x.py` -> `pkg.x` where only `pkg` has an `__init__.py`)."""
    file = Path(os.path.abspath(path))
    parts = [] if file.name == "__init__.py" else [file.stem]
    directory = file.parent
    while (directory / "__init__.py").is_file() and directory.parent != directory:
        parts.insert(0, directory.name)
        directory = directory.parent
    return ".".join(parts)


def parse_file(path: str) -> tuple[str, ast.Module] | None:
    """A file's text and tree; None when it is not UTF-8 or does not parse."""
    text = read_source(path)
    if text is None:
        return None
    try:
        return text, ast.parse(text, filename=path)
    except (SyntaxError, ValueError):
        return None


def module_definitions(tree: ast.Module) -> frozenset[str]:
    """Names a module binds at module level with def, class or assignment (also under
    top-level `if` and `try`, as in `try: ... except ImportError: def fallback(): ...`)."""
    names: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        statement = pending.pop()
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                names.update(_target_names(target))
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
            names.update(_target_names(statement.target))
        elif isinstance(statement, ast.If | ast.Try):
            pending += [*statement.body, *statement.orelse]
            if isinstance(statement, ast.Try):
                pending += statement.finalbody
                for handler in statement.handlers:
                    pending += handler.body
    return frozenset(names)


def _target_names(target: ast.expr) -> Iterator[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


@functools.lru_cache(maxsize=32)
def load_project(root: str) -> Project:
    """Every module of the project at `root`, with its definitions and its imports resolved
    against the other modules (read once per run: cached by `root`)."""
    root = str(Path(root).resolve())
    parsed: dict[str, tuple[str, ast.Module]] = {}
    modules: dict[str, Module] = {}
    for path in project_files(root):
        result = parse_file(path)
        if result is None:
            continue
        name = module_name(root, path)
        parsed[name] = result
        modules[name] = Module(name, path, Path(path).name == "__init__.py",
                               module_definitions(result[1]))
    # A checkout (`--repo checkout`) imports `pkg.x`, not `checkout.src.pkg.x`.
    known = {name: name for name in modules}
    for name, module in modules.items():
        known.setdefault(import_name(module.path), name)
    for name, (_, tree) in parsed.items():
        modules[name] = _with_imports(modules[name], tree, modules, known)
    return Project(Path(root).name, root, modules)


def _with_imports(module: Module, tree: ast.Module, modules: dict[str, Module],
                  known: dict[str, str]) -> Module:
    """`module` with the project names and modules its import statements bind (those the
    file binds itself elsewhere left out: they may not be the imported ones). `known` maps
    the names the project's modules are imported by to their names here."""
    names: dict[str, tuple[str, str]] = {}
    aliases: dict[str, str] = {}
    imported: dict[str, None] = {}  # an ordered set
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute_source(module, node)
            if source is None:
                continue
            source = known.get(source, source)
            for alias in node.names:
                local = alias.asname or alias.name
                submodule = known.get(f"{source}.{alias.name}")
                if submodule is not None:
                    aliases[local] = submodule
                    imported[submodule] = None
                elif source in modules and source != module.name:
                    imported[source] = None
                    if alias.name in modules[source].definitions:
                        names[local] = (source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                full, top = alias.name, alias.name.split(".")[0]
                if full in known:
                    imported[known[full]] = None
                if alias.asname and full in known:
                    aliases[alias.asname] = known[full]
                elif not alias.asname and top in known:
                    aliases[top] = known[top]
    rebound = bound_names(tree)
    return Module(module.name, module.path, module.is_package, module.definitions,
                  {local: found for local, found in names.items() if local not in rebound},
                  {local: found for local, found in aliases.items() if local not in rebound},
                  tuple(name for name in imported if name != module.name))


def _absolute_source(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module name of `from <source> import ...` inside `module`."""
    if node.level == 0:
        return node.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    keep = len(package) - (node.level - 1)
    if keep <= 0:
        return None
    return ".".join([*package[:keep], *([node.module] if node.module else [])])


def bound_names(tree: ast.Module) -> set[str]:
    """Every name the file binds anywhere other than by import: assignments, parameters,
    defs, classes, loop and `with` targets, `except ... as`, `global` declarations."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                        | ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
    return names


# Finding the sites


def _code_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node outside f-strings (whose inner positions are not to be trusted)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, ast.JoinedStr):
            pending += ast.iter_child_nodes(node)


def _module_of(expression: ast.expr, module: Module, project: Project) -> str | None:
    """The project module an expression such as `utils` or `email.utils` names, if any."""
    if isinstance(expression, ast.Name):
        return module.imported_modules.get(expression.id)
    if isinstance(expression, ast.Attribute):
        parent = _module_of(expression.value, module, project)
        if parent is not None and f"{parent}.{expression.attr}" in project.modules:
            return f"{parent}.{expression.attr}"
    return None


def _index_in_line(lines: Sequence[str], line: int, byte_column: int) -> int:
    """The str index of an `ast` column (UTF-8 bytes) in a 0-based line."""
    return len(lines[line].encode("utf-8")[:byte_column].decode("utf-8", "replace"))


def cross_file_uses(tree: ast.Module, lines: Sequence[str], module: Module,
                    project: Project) -> Iterator[_Use]:
    """Loads of names defined in another file of the project: `quote` imported from
    `email.utils`, or `utils.quote` / `email.utils.quote` through an imported module."""
    for node in _code_nodes(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found = module.imported_names.get(node.id)
            if found is not None:
                line = node.lineno - 1
                yield _Use(line, _index_in_line(lines, line, node.col_offset), node.id,
                           found[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            source = _module_of(node.value, module, project)
            if (source is None or source == module.name or node.end_lineno is None
                    or node.end_col_offset is None
                    or node.attr not in project.modules[source].definitions):
                continue
            line = node.end_lineno - 1
            column = node.end_col_offset - len(node.attr.encode("utf-8"))
            yield _Use(line, _index_in_line(lines, line, column), node.attr, source)


def comment_starts(text: str) -> dict[int, int]:
    """0-based line -> str index where a comment starts on it."""
    starts: dict[int, int] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text, newline=None).readline):
            if token.type == tokenize.COMMENT:
                starts[token.start[0] - 1] = token.start[1]
    except (tokenize.TokenError, SyntaxError):
        pass
    return starts


def file_sites(project: Project, module: Module) -> list[Site]:
    """One site per line holding a cross-file use, at the line's first such use; lines
    with a comment after the cursor are left out (no model is asked to guess a comment)."""
    parsed = parse_file(module.path)
    if parsed is None:
        return []
    text, tree = parsed
    lines = [line.rstrip("\r\n") for line in split_lines(text)]
    comments = comment_starts(text)
    first: dict[int, _Use] = {}
    for use in cross_file_uses(tree, lines, module, project):
        if (use.line < len(lines) and lines[use.line][use.index:].startswith(use.name)
                and (use.line not in first or use.index < first[use.line].index)):
            first[use.line] = use
    sites = []
    for line, use in sorted(first.items()):
        if comments.get(line, len(lines[line])) < len(lines[line]):
            continue
        content = lines[line]
        sites.append(Site(
            project=project.name, root=project.root, path=module.path, module=module.name,
            line=line, character=utf16_length(content[:use.index]),
            target=content[use.index:], name=use.name,
            defined_in=project.modules[use.module].path, defining_module=use.module))
    return sites


def find_sites(root: str) -> list[Site]:
    """Every site of the project at `root`, file by file, line by line."""
    project = load_project(root)
    return [site for module in sorted(project.modules.values(), key=lambda m: m.path)
            for site in file_sites(project, module)]


# The document given to the server


def masked_lines(site: Site) -> list[str]:
    """The site's file as lines with their endings, the target cut from the site's line."""
    text = read_source(site.path) or ""
    lines = split_lines(text)
    original = lines[site.line]
    content = original.rstrip("\r\n")
    rest = site.rest or site.target
    if not content.endswith(rest):
        raise ValueError(f"{site.path}:{site.line + 1} changed since its sites were found")
    lines[site.line] = (content[:len(content) - len(rest)] + site.suffix
                        + original[len(content):])
    return lines


def masked_document(site: Site) -> str:
    """The text opened in the editor: the file with the rest of the site's line removed."""
    return "".join(masked_lines(site))


def line_before_cursor(site: Site) -> str:
    """The site's line up to the cursor."""
    line = masked_lines(site)[site.line].rstrip("\r\n")
    return line[:len(line) - len(site.suffix)]


def auto_closed(site: Site) -> Site | None:
    """The site as an editor that auto-closes brackets leaves it inside the first call of
    its target: the cursor after `name(`, the `)` after it, the call's arguments the
    target (`quote(addr, cs):` -> `addr, cs`, with `)` after the cursor). None when the
    target calls nothing with arguments on this line."""
    start = site.target.find("(")
    end = _matching_close(site.target, start) if start >= 0 else None
    if end is None or not site.target[start + 1:end].strip():
        return None
    head = site.target[:start + 1]
    return dataclasses.replace(site, character=site.character + utf16_length(head),
                               target=site.target[start + 1:end], rest=site.target[len(head):],
                               suffix=")")


def _matching_close(text: str, opening: int) -> int | None:
    """The index of the `)` closing the `(` at `opening`, if the text has it (brackets in
    strings count too: a rough scan, as the benchmark's lines are real code)."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return None


# Sampling


def _by_file(sites: Sequence[Site], rng: random.Random, per_file_max: int) -> list[list[Site]]:
    """The sites grouped by file, files and sites in a seeded order, at most
    `per_file_max` sites a file."""
    groups: dict[str, list[Site]] = {}
    for site in sites:
        groups.setdefault(site.path, []).append(site)
    files = [groups[path] for path in sorted(groups)]
    rng.shuffle(files)
    for group in files:
        rng.shuffle(group)
    return [group[:per_file_max] for group in files]


def _round_robin(groups: Sequence[Sequence[Site]], limit: int | None = None) -> list[Site]:
    """One from each group in turn until all are used (or `limit` are taken)."""
    taken: list[Site] = []
    depth = 0
    while any(depth < len(group) for group in groups):
        taken += [group[depth] for group in groups if depth < len(group)]
        depth += 1
    return taken if limit is None else taken[:limit]


def sample_sites(projects: Sequence[str], count: int, seed: int = 0,
                 per_file_max: int = DEFAULT_PER_FILE_MAX,
                 per_project_max: int | None = None) -> list[Site]:
    """`count` sites spread across the projects (one from each in turn) and, within each,
    across its files (one from each in turn, at most `per_file_max` a file); seeded."""
    return sample_from([find_sites(root) for root in projects], count, seed, per_file_max,
                       per_project_max)


def sample_from(found: Sequence[Sequence[Site]], count: int, seed: int = 0,
                per_file_max: int = DEFAULT_PER_FILE_MAX,
                per_project_max: int | None = None) -> list[Site]:
    """`sample_sites` from each project's sites, already found."""
    rng = random.Random(seed)
    per_project = [_round_robin(_by_file(sites, rng, per_file_max), per_project_max)
                   for sites in found]
    return _round_robin(per_project)[:count]


# The other files an editor has open


def open_files(site: Site, count: int = DEFAULT_OPEN_FILES, seed: int = 0) -> list[str]:
    """Up to `count` other files of the site's project, in the order the user opened them:
    about half from the modules the site's file imports, the rest at random; the file
    defining the site's name is among them only by chance. Seeded per site."""
    project = load_project(site.root)
    own = project.modules[site.module]
    others = sorted(module.path for module in project.modules.values() if module.path != own.path)
    related = list(dict.fromkeys(project.modules[name].path for name in own.imports
                                 if project.modules[name].path != own.path))
    rng = random.Random(f"{seed}:{site.path}:{site.line}")
    chosen = rng.sample(related, min(len(related), (count + 1) // 2))
    unrelated = [path for path in others if path not in chosen]
    chosen += rng.sample(unrelated, min(count - len(chosen), len(unrelated)))
    rng.shuffle(chosen)
    return chosen
