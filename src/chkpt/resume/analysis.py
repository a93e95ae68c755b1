"""Static facts of one version of a script: what each top-level statement reads, binds and mutates.

Names come from `symtable`: a statement's own loads and binds, the globals read by the
functions and lambdas it defines (`deferred`, read when they are called) and the globals
they assign through `global`. Class bodies and comprehensions run at once, so their reads
count as the statement's. Mutations through `a.x = …`, `a[k] = …` and `a.method(…)` come
from the AST. A call through an imported module (`pd.concat(…)`, `np.zeros(…)`) changes no
value; it counts as changing the module only when its result is discarded (`np.random.seed(0)`,
`sys.path.append(p)`, `plt.plot(x)`: called for what they do) or it draws from a global random
generator (`x = np.random.rand(3)` advances it): see STATEFUL. A statement reads the
program's arguments when it reads `sys.argv` or parses them (`parser.parse_args()`, `getopt`).
"""

from __future__ import annotations

import ast
import symtable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

COMPREHENSIONS = ("listcomp", "setcomp", "dictcomp", "genexpr")
# Module functions that change their module's state even when their result is used: the global
# random generators, which every draw advances (prefix → the names under it that do not).
STATEFUL = {
    "random.": {"Random", "SystemRandom"},
    "numpy.random.": {"default_rng", "Generator", "RandomState", "SeedSequence", "BitGenerator",
                      "PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"},
    "torch.random.": set(),
    "torch.cuda.random.": set(),
    "tensorflow.random.": {"Generator"},
}
STATEFUL_CALLS = {f"torch.{name}" for name in (
    "manual_seed", "seed", "set_rng_state", "rand", "randn", "randint", "randperm", "rand_like",
    "randn_like", "randint_like", "normal", "bernoulli", "multinomial", "poisson")} | {
    "torch.cuda.manual_seed", "torch.cuda.manual_seed_all", "torch.cuda.seed", "torch.cuda.seed_all"}
# Methods that parse the program's arguments (argparse's), whatever they are called on.
ARGUMENT_PARSERS = {"parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args"}


def is_definition(stmt: ast.stmt) -> bool:
    """def/class/import, a lambda assignment and the docstring: cheap, always re-run, may be edited."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom):
        return True
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Lambda):
        return True
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
        stmt.value.value, str)


def first_line(stmt: ast.stmt) -> int:
    """The statement's first line, its decorators included."""
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])


def statement_at(body: list[ast.stmt], line: int) -> int | None:
    """Index of the statement of `body` whose lines hold `line`."""
    for index, stmt in enumerate(body):
        if first_line(stmt) <= line <= (stmt.end_lineno or stmt.lineno):
            return index
    return None


def root_name(node: ast.expr) -> str | None:
    """`a` for `a`, `a.b[1].c`; None for anything not rooted in a plain name."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def target_names(loop: ast.For | ast.While) -> set[str]:
    """The names a `for` loop binds to each item (none for `while`)."""
    if isinstance(loop, ast.While):
        return set()
    return {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}


def enumerate_counter(loop: ast.For) -> str | None:
    """The counter name of `for i, x in enumerate(…)`, else None."""
    call, target = loop.iter, loop.target
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "enumerate"
            and isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name)):
        return target.elts[0].id
    return None


def dotted(node: ast.expr) -> str | None:
    """`np.random.seed` for that attribute chain; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def module_aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound by `import m` / `import m as a` anywhere in `tree` → the module's name."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # `import os.path` binds os
                    aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]
    return aliases


def argv_imports(tree: ast.AST) -> dict[str, str]:
    """Names bound by `from sys import argv [as a]` anywhere in `tree` → "sys.argv"."""
    return {alias.asname or alias.name: "sys.argv" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "sys" and not node.level
            for alias in node.names if alias.name == "argv"}


def reads_arguments(node: ast.AST, modules: dict[str, str]) -> bool:
    """Whether `node` (its function bodies included) reads the program's arguments."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and modules.get(child.id) == "sys.argv":
            return True
        root, _, rest = (dotted(child) or "").partition(".") if isinstance(child, ast.Attribute) else ("", "", "")
        if f"{modules.get(root)}.{rest}".startswith(("sys.argv", "getopt.")):
            return True
        if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and \
                child.func.attr in ARGUMENT_PARSERS:
            return True
    return False


def is_stateful(name: str) -> bool:
    """Whether calling the module function `name` (`numpy.random.rand`) changes module state."""
    if name in STATEFUL_CALLS:
        return True
    for prefix, exceptions in STATEFUL.items():
        if name.startswith(prefix) and name[len(prefix):].split(".")[0] not in exceptions:
            return True
    return False


def comprehension_locals(stmt: ast.stmt) -> set[str]:
    """Names bound only as targets of list/set/dict comprehensions in `stmt`: symtable reports
    them in the enclosing scope since comprehensions are inlined (PEP 709)."""
    inside: set[str] = set()
    outside: set[str] = set()

    def visit(node: ast.AST, in_comprehension: bool) -> None:
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp):
            for generator in node.generators:
                inside.update(n.id for n in ast.walk(generator.target) if isinstance(n, ast.Name))
            in_comprehension = True
        elif isinstance(node, ast.Name) and not in_comprehension:
            outside.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            outside.add(node.name)
        elif isinstance(node, ast.alias):
            outside.add((node.asname or node.name).split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, in_comprehension)

    visit(stmt, False)
    return inside - outside


class Facts:
    """What one top-level statement reads, binds and mutates, by name."""

    def __init__(self, stmt: ast.stmt, modules: dict[str, str] | None = None) -> None:
        self.modules = modules or {}  # names bound to imported modules → the module's name
        self._discarded: set[int] = set()  # the calls whose result is thrown away
        self.loads: set[str] = set()     # read while the statement runs
        self.deferred: set[str] = set()  # read by the functions/lambdas it defines, when called
        self.binds: set[str] = set()
        self.mutates: set[str] = set()
        self.global_writes: set[str] = set()  # assigned through `global` in functions it defines
        self.reads_arguments = reads_arguments(stmt, self.modules)  # itself or the functions it defines
        self._scan(symtable.symtable(ast.unparse(stmt), "<chkpt>", "exec"), executed=True, top=True)
        inlined = comprehension_locals(stmt)
        self.loads -= inlined
        self.binds -= inlined
        self._walk(stmt)

    def _scan(self, table: symtable.SymbolTable, executed: bool, top: bool) -> None:
        for symbol in table.get_symbols():
            name = symbol.get_name()
            if top:
                if symbol.is_referenced():
                    self.loads.add(name)
                if symbol.is_assigned() or symbol.is_imported():
                    self.binds.add(name)
            elif symbol.is_declared_global() and symbol.is_assigned():
                self.global_writes.add(name)
                self.deferred.add(name)
            elif symbol.is_global() and symbol.is_referenced():
                (self.loads if executed else self.deferred).add(name)
        for child in table.get_children():
            runs_now = str(child.get_type()) == "class" or child.get_name() in COMPREHENSIONS
            self._scan(child, executed and runs_now, top=False)

    def _walk(self, node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for part in (*node.args.defaults, *node.args.kw_defaults, *getattr(node, "decorator_list", [])):
                if part is not None:
                    self._walk(part)
            return
        if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            self._mutated(node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self._discarded.add(id(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            self._called(node)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            self.loads.add(node.target.id)  # symtable counts `x += 1` as a bind only
        for child in ast.iter_child_nodes(node):
            self._walk(child)

    def _called(self, call: ast.Call) -> None:
        """`x.method(…)` changes x; a module function changes its module only if STATEFUL or
        called for its effect."""
        assert isinstance(call.func, ast.Attribute)
        name = dotted(call.func)
        root = name.split(".")[0] if name else None
        if root in self.modules and name is not None and self.modules[root] != "sys.argv":
            full = ".".join([self.modules[root], *name.split(".")[1:]])
            if id(call) not in self._discarded and not is_stateful(full):
                return
        self._mutated(call.func.value)

    def _mutated(self, node: ast.expr) -> None:
        name = root_name(node)
        if name is not None:
            self.mutates.add(name)


class Block:
    """The facts of every statement of one body: the module's, or a function's."""

    def __init__(self, body: list[ast.stmt], modules: dict[str, str]) -> None:
        self.body = body
        self.modules = modules
        self.facts = [Facts(stmt, modules) for stmt in body]
        self.body_needs: dict[str, set[str]] = {}  # function/class name → globals its code reads
        self.global_writers: dict[str, set[str]] = {}  # function name → globals it assigns
        for facts in self.facts:
            for name in facts.binds:
                self.body_needs.setdefault(name, set()).update(facts.deferred)
                if facts.global_writes:
                    self.global_writers.setdefault(name, set()).update(facts.global_writes)
        # functions/classes whose code reads the program's arguments
        self.argument_readers = {name for stmt, facts in zip(body, self.facts, strict=True)
                                 if facts.reads_arguments and isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef
                                                                          | ast.ClassDef) for name in facts.binds}

    def closure(self, names: Iterable[str]) -> set[str]:
        """`names` and every global the functions among them read, transitively."""
        found = set(names)
        todo = list(found)
        while todo:
            for name in self.body_needs.get(todo.pop(), ()):
                if name not in found:
                    found.add(name)
                    todo.append(name)
        return found

    def reads(self, index: int) -> set[str]:
        """Names statement `index` reads, itself or through the functions it calls."""
        return self.closure(self.facts[index].loads)

    def reads_arguments(self, index: int) -> bool:
        """Whether statement `index` reads the program's arguments, itself or through the
        functions it calls."""
        return self.facts[index].reads_arguments or bool(self.reads(index) & self.argument_readers)

    def touches(self, index: int) -> set[str]:
        """Names statement `index` binds or mutates, itself or through the functions it calls."""
        facts = self.facts[index]
        touched = facts.binds | facts.mutates
        for name in self.reads(index):
            touched |= self.global_writers.get(name, set())
        return touched

    def statement_at(self, line: int) -> int | None:
        """Index of the statement of this block whose lines hold `line`."""
        return statement_at(self.body, line)


class Module(Block):
    """The facts of every top-level statement of one version of the script."""

    def __init__(self, source: bytes | str, filename: str) -> None:
        self.tree = ast.parse(source, filename)
        super().__init__(self.tree.body, module_aliases(self.tree) | argv_imports(self.tree))

    def function(self, name: str) -> ast.FunctionDef | None:
        """The top-level `def name` (the last one), if the script has one."""
        found = [s for s in self.body if isinstance(s, ast.FunctionDef) and s.name == name]
        return found[-1] if found else None


def function_locals(function: ast.FunctionDef) -> set[str]:
    """The local names of a top-level function: its parameters and what it binds."""
    table = symtable.symtable(ast.unparse(function), "<chkpt>", "exec")
    child = next(t for t in table.get_children() if t.get_name() == function.name)
    assert isinstance(child, symtable.Function)
    return set(child.get_locals())


# Methods that return a new value and change nothing (numpy's, pandas', the builtin types').
KEEPING_METHODS = {
    "sum", "mean", "max", "min", "std", "var", "prod", "cumsum", "cumprod", "argmax", "argmin", "any", "all",
    "copy", "astype", "reshape", "ravel", "flatten", "transpose", "tolist", "item", "dot", "round", "clip",
    "nonzero", "count", "index", "get", "keys", "values", "items", "format", "join", "split", "strip",
    "lower", "upper", "startswith", "endswith", "head", "tail", "describe", "to_numpy", "isna", "notna",
    "isnull", "groupby", "agg", "mode", "median", "quantile", "unique", "nunique", "value_counts",
}
KEEPING_BUILTINS = {
    "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "float", "format", "frozenset", "hash",
    "int", "isinstance", "issubclass", "len", "list", "max", "min", "pow", "print", "range", "repr",
    "reversed", "round", "set", "sorted", "str", "sum", "tuple", "type", "zip", "id", "bytes", "complex",
}


def keeps(call: ast.Call, block: Block, functions: dict[str, ast.FunctionDef], ours: frozenset[str] = frozenset(),
          seen: frozenset[str] = frozenset()) -> bool:
    """Whether `call` cannot change what it is given nor a global: a function of the script
    that changes neither (`keeps_what_it_is_given`), a builtin or a method that only computes,
    or a function of a library module (the analysis's rule: `np.mean(x)` changes no value),
    not one of `ours` (the user's own packages, whose functions are what changes things)."""
    name = dotted(call.func)
    if name is None:
        return False
    root, _, rest = name.partition(".")
    if rest:
        if root in block.modules:
            return block.modules[root].partition(".")[0] not in ours
        return rest.rpartition(".")[2] in KEEPING_METHODS
    if root in functions:
        return root not in seen and keeps_what_it_is_given(functions[root], block, functions, ours, seen | {root})
    return root in KEEPING_BUILTINS


def keeps_what_it_is_given(function: ast.FunctionDef, block: Block, functions: dict[str, ast.FunctionDef],
                           ours: frozenset[str] = frozenset(), seen: frozenset[str] = frozenset()) -> bool:
    """Whether the script's function `function` changes neither an object it is given nor a
    global: no `global`/`nonlocal`, no `+=` on a parameter, and what it changes in place
    (`x[k] = …`, `x.attr = …`, a method called) a value it made itself; every call it makes
    one that `keeps`. (A local bound to a parameter or to an item of one is the parameter.)"""
    arguments = function.args
    given = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg) if a is not None}
    nodes = [n for stmt in function.body for n in ast.walk(stmt)]
    for node in nodes:  # aliases of what it was given count as given
        if isinstance(node, ast.For | ast.comprehension | ast.withitem):
            target = node.target if not isinstance(node, ast.withitem) else node.optional_vars
            given |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} if target is not None else set()
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and isinstance(
                node.value, ast.Name | ast.Attribute | ast.Subscript | ast.Starred | ast.IfExp | ast.BoolOp):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            given |= {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}
    for node in nodes:
        if isinstance(node, ast.Global | ast.Nonlocal):
            return False
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id in given:
            return False
        if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            root = root_name(node)
            if root is None or root in given or not _bound_in(root, nodes):
                return False
        if isinstance(node, ast.Call) and not keeps(node, block, functions, ours, seen):
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            root = root_name(receiver) if receiver is not None else None
            passed = set().union(*(held(part) for part in (*node.args, *(k.value for k in node.keywords))))
            passed -= set(block.modules)
            # a function given only values it made (`open("log")`), or a method of a value it
            # made, given only such values: changes only what it made
            if receiver is not None and (root is None or root in given or not _bound_in(root, nodes)):
                return False
            if passed & given or any(not _bound_in(n, nodes) for n in passed):
                return False
    return True


def held(node: ast.expr) -> set[str]:
    """The names whose objects the value of `node` is or holds (`w`, `w.x`, `[w, v]`); none for
    what a call or an operator computes."""
    if isinstance(node, ast.Name | ast.Attribute | ast.Subscript | ast.Starred):
        inner = node.value if isinstance(node, ast.Starred) else node
        root = root_name(inner)
        return {root} if root else set()
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return set().union(*(held(e) for e in node.elts))
    if isinstance(node, ast.Dict):
        return set().union(*(held(v) for v in node.values))
    if isinstance(node, ast.IfExp):
        return held(node.body) | held(node.orelse)
    return set()


def _bound_in(name: str, nodes: list[ast.AST]) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store) for n in nodes)
