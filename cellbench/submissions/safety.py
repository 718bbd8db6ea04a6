"""Static checks of submitted model files, run before anything is loaded.

Threat model
------------
A submitted model is untrusted input from a stranger. cellbench's rules:

* **Never unpickle.** Python's ``pickle`` (and ``torch.load`` without ``weights_only``) runs
  arbitrary code while loading. cellbench never calls ``pickle.load`` or ``torch.load`` on a
  submission. Files are recognised by their magic bytes first: a raw pickle (``torch.save`` of
  old, ``.pkl``) or a ``torch.save`` zip checkpoint (a zip with ``data.pkl`` but no TorchScript
  ``code/``) is refused with one line, whatever its extension or declared kind.
* **safetensors** holds only tensors: the header is parsed as JSON and its offsets checked
  against the file size before the weights are read by the ``safetensors`` library.
* **TorchScript** is code in a restricted language (no Python interpreter), but it is still
  code: ``torch.jit.load`` compiles the archive's ``code/`` and runs TorchScript
  ``__setstate__`` methods *while loading*, and running the model executes whatever ops it
  names - including file access (``torch.save`` writes files, ``torch.from_file`` reads
  them). ``torch.jit.load`` runs ``__setstate__`` before anything can inspect the loaded
  module, so the archive is judged without executing any of it. Before loading, cellbench
  therefore (1) checks every zip member name (no absolute
  paths, no ``..``, no backslashes or drive letters, no symlinks, no duplicates), the number
  and sizes of members and their compression ratios (zip bombs); (2) walks the opcodes of every
  pickle in the archive with :mod:`pickletools` (which parses, never executes) and refuses any
  global reference outside a short allow-list (TorchScript's own classes ``__torch__.*``,
  tensor/storage rebuild helpers, ``collections.OrderedDict``); (3) reads the TorchScript source
  as tokens and with TorchScript's own parser (``torch._C._parse_source_def``) and refuses any
  naming of ops that touch files or the process (:data:`DENIED_OPS`), however it is spaced or
  split over lines, and custom op namespaces (which would need native libraries); code either
  parser cannot read is refused as unvettable; so is a string constant spelling a refused op
  (TorchScript has no dynamic attribute access beyond constant-string ``getattr``). The archive
  is then loaded only inside the sandbox (:mod:`cellbench.submissions.sandbox`), where every
  method graph of every submodule is checked against the same op deny-list before the model is
  run.
* **ONNX** is a declarative graph, parsed with ``onnx`` (protobuf, no code). Before a session
  is created cellbench refuses unknown operator domains (custom ops need native libraries),
  external-data paths that leave the model's folder, and declared tensor shapes whose size
  exceeds :attr:`Limits.max_tensor_bytes` (a model declaring a 10 GB input is refused before
  anything is allocated); per input shape, ONNX shape inference bounds every intermediate
  tensor the same way before the first run.

These checks run in the calling process and never load the model. Every model is then loaded
and run only in the sandbox (:mod:`cellbench.submissions.sandbox`: a separate process without
network, with resource limits and, where the kernel has Landlock, without access to anything
but its inputs and a scratch folder), which bounds what a model that slips through can do. Bugs
in the native runtimes and the kernel remain out of cellbench's reach; prefer predictions or
safetensors packages when you can.
"""

from __future__ import annotations

import ast
import io
import json
import pickletools
import re
import stat
import struct
import tokenize
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cellbench.training.layout import PACKAGE_FILES, package_dir

GiB = 1 << 30

#: TorchScript ops refused anywhere in a submitted model (file-system and debug I/O).
DENIED_OPS = frozenset(
    {
        "aten::from_file",
        "aten::save",
        "prim::PythonOp",
        "prim::CallPython",
    }
)
#: Op namespaces a submitted TorchScript model may use.
ALLOWED_NAMESPACES = frozenset({"aten", "prim", "quantized", "_quantized", "torchvision"})
#: Globals a TorchScript archive's pickles may reference (exact names).
ALLOWED_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_sparse_tensor",
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensor_from_id",
        "torch.jit._pickle.restore_type_tag",
        "torch.device",
        "torch.Size",
        "torch.per_tensor_affine",
        "torch.per_channel_affine",
    }
)
_ALLOWED_GLOBAL_PATTERNS = (
    re.compile(r"^__torch__(\.[A-Za-z_][\w]*)+$"),  # classes compiled from the archive's code/
    re.compile(r"^torch\.[A-Za-z]*Storage$"),  # typed storages (FloatStorage, ...)
    re.compile(r"^torch\.(float|half|bfloat16|double|u?int\d+|bool|complex\d+|qu?int\d+)$"),
)
#: ONNX operator domains cellbench can run without extra native libraries.
ALLOWED_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_ONNX_ITEMSIZE = {
    1: 4,
    2: 1,
    3: 1,
    4: 2,
    5: 2,
    6: 4,
    7: 8,
    9: 1,
    10: 2,
    11: 8,
    12: 4,
    13: 8,
    14: 8,
    15: 16,
    16: 2,
}
_SAFETENSORS_DTYPES = {
    "BOOL",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "F64",
    "I64",
    "U64",
}


@dataclass(frozen=True)
class Limits:
    """Size limits applied to submitted model files.

    Attributes:
        max_file_bytes: Largest model file accepted.
        max_member_bytes: Largest uncompressed member of a TorchScript zip.
        max_total_bytes: Largest total uncompressed size of a TorchScript zip.
        max_members: Most members in a TorchScript zip.
        max_ratio: Highest compression ratio of one member (zip-bomb guard).
        max_code_bytes: Largest TorchScript source file scanned.
        max_tensor_bytes: Largest tensor an ONNX model may declare or infer.
        max_dim: Largest single dimension an ONNX model may declare.
    """

    max_file_bytes: int = 8 * GiB
    max_member_bytes: int = 4 * GiB
    max_total_bytes: int = 8 * GiB
    max_members: int = 100_000
    max_ratio: float = 200.0
    max_code_bytes: int = 16 << 20
    max_tensor_bytes: int = 8 * GiB
    max_dim: int = 1 << 20


DEFAULT_LIMITS = Limits()


def sniff(path: Path) -> str:
    """Recognise a file by its first bytes: ``pickle``, ``zip``, ``safetensors`` or ``other``."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:1] in (b"(", b"c", b"]", b"}") and path.suffix.lower() in (
        ".pkl",
        ".pickle",
        ".pt",
        ".pth",
        ".ckpt",
        ".bin",
    ):
        return "pickle"  # protocol 0/1 pickles start with an opcode character
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < (100 << 20) and head[8:9] == b"{":
            return "safetensors"
    return "other"


def pickle_refusal(path: Path) -> str:
    """The one-line refusal for a pickle-based checkpoint."""
    return (
        f"{path}: is a pickle-based checkpoint (torch.save/pickle); cellbench never unpickles "
        "submissions because loading a pickle runs arbitrary code. Submit a safetensors model "
        "package, TorchScript (torch.jit.save) or ONNX instead"
    )


def _is_torch_save_zip(names: Sequence[str]) -> bool:
    has_data = any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)
    has_code = any("/code/" in n for n in names)
    return has_data and not has_code


def member_name_problems(name: str) -> list[str]:
    """Problems of one zip member name (absolute, traversal, backslash, drive letter)."""
    out = []
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        out.append(f"member {name!r}: absolute path")
    if "\\" in name:
        out.append(f"member {name!r}: backslash in name")
    if ".." in PurePosixPath(name).parts:
        out.append(f"member {name!r}: path traversal ('..')")
    if "\x00" in name:
        out.append(f"member {name!r}: NUL byte in name")
    return out


def zip_problems(path: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Check a zip archive's member names, count, sizes and compression ratios (no extraction).

    Returns:
        One line per problem (empty when the archive's structure is acceptable).
    """
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        return [f"{path}: not a readable zip archive ({err})"]
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            problems.append(f"{path}: {len(infos)} members (at most {limits.max_members})")
        seen: set[str] = set()
        total = 0
        for info in infos:
            problems += [f"{path}: {p}" for p in member_name_problems(info.filename)]
            if info.filename in seen:
                problems.append(f"{path}: member {info.filename!r} appears twice")
            seen.add(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                problems.append(f"{path}: member {info.filename!r} is a symbolic link")
            if info.file_size > limits.max_member_bytes:
                problems.append(
                    f"{path}: member {info.filename!r} is {info.file_size} bytes uncompressed "
                    f"(at most {limits.max_member_bytes})"
                )
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                problems.append(
                    f"{path}: member {info.filename!r} compresses {info.file_size} bytes into "
                    f"{info.compress_size} (ratio over {limits.max_ratio:g}: zip bomb?)"
                )
            total += info.file_size
        if total > limits.max_total_bytes:
            problems.append(
                f"{path}: {total} bytes uncompressed in total (at most {limits.max_total_bytes})"
            )
    return problems


def pickle_globals(data: bytes) -> tuple[set[str], list[str]]:
    """Global references of a pickle, found by walking its opcodes (nothing is executed).

    Handles ``GLOBAL``/``INST`` (the name is the opcode argument) and ``STACK_GLOBAL`` (module
    and name are the two preceding string pushes, possibly via the memo).

    Returns:
        ``(globals as "module.name", problems)``; a problem is reported for references that
        cannot be resolved statically and for extension-registry opcodes.
    """
    found: set[str] = set()
    problems: list[str] = []
    strings: list[str | None] = []
    memo: dict[int, str | None] = {}
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.add(f"{module}.{attr}")
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2 and strings[-1] is not None and strings[-2] is not None:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                else:
                    problems.append("STACK_GLOBAL whose module/name cannot be resolved statically")
            elif name in ("EXT1", "EXT2", "EXT4"):
                problems.append(f"extension-registry opcode {name}")
            if name in (
                "SHORT_BINUNICODE",
                "BINUNICODE",
                "BINUNICODE8",
                "UNICODE",
                "SHORT_BINSTRING",
                "BINSTRING",
                "STRING",
            ):
                strings.append(str(arg))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(arg)))
            elif name not in ("PROTO", "FRAME"):
                strings.append(None)
    except (ValueError, EOFError, struct.error) as err:
        problems.append(f"not a well-formed pickle ({err})")
    return found, problems


def global_allowed(name: str) -> bool:
    """Whether a pickled global reference is one TorchScript archives legitimately use."""
    return name in ALLOWED_GLOBALS or any(p.match(name) for p in _ALLOWED_GLOBAL_PATTERNS)


_DENIED_ATEN = frozenset(op.split("::", 1)[1] for op in DENIED_OPS if op.startswith("aten::"))
_SKIP_TOKENS = frozenset({tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT})
_SEXPR_OPS_NS = re.compile(r"\(\.\s*\(variable \(ident ops\)\)\s*\(ident ([A-Za-z_]\w*)\)\)")
_SEXPR_IDENT = re.compile(r"\(ident ([A-Za-z_]\w*)\)")


def _dotted_chains(source: str) -> list[list[str]]:
    """Every dotted name in Python/TorchScript source, as its list of parts.

    Built from the tokenizer's tokens, so spaces around the dots, comments, line continuations
    and newlines inside brackets do not matter (``torch . save``, ``torch .save``,
    a backslash continuation between ``torch.`` and ``save``, and ``ops . aten . save`` all
    give the same chain); strings
    are single tokens and never form chains.

    Raises:
        tokenize.TokenError, SyntaxError: If the source cannot be tokenized.
    """
    chains: list[list[str]] = []
    current: list[str] = []
    expect_name = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _SKIP_TOKENS:
            continue
        if tok.type == tokenize.NAME and expect_name:
            current.append(tok.string)
            expect_name = False
        elif tok.type == tokenize.OP and tok.string == "." and current and not expect_name:
            expect_name = True
        else:
            if current:
                chains.append(current)
            current = [tok.string] if tok.type == tokenize.NAME else []
            expect_name = not current
    if current:
        chains.append(current)
    return chains


def _chain_op(chain: Sequence[str]) -> tuple[str, str] | None:
    """``(namespace, op)`` named by a dotted chain, if it names an op."""
    parts = list(chain)
    if parts[:2] == ["torch", "ops"]:
        parts = parts[1:]
    if parts[:1] == ["ops"] and len(parts) >= 3:
        return parts[1], parts[2]
    if parts[:1] == ["torch"] and len(parts) == 2:
        return "aten", parts[1]
    return None


def _denied_strings(source: str) -> list[str]:
    """String constants spelling a refused op (``getattr(torch, "save")`` would reach it)."""
    names = {op.split("::", 1)[1] for op in DENIED_OPS} | set(DENIED_OPS)
    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # reported as unparseable by _parsed_by_torchscript
    return sorted(
        {
            f"names the refused op {node.value.strip()!r} in a string"
            for node in ast.walk(module)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.strip() in names
        }
    )


def _parsed_by_torchscript(source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Parse every method of a code file with TorchScript's own parser.

    Python's ``ast`` finds the functions (serialized TorchScript is Python syntax); each is
    then parsed by ``torch._C._parse_source_def``, TorchScript's lexer and parser, whose tree
    (an S-expression) is what ``torch.jit.load`` would compile.

    Returns:
        ``(trees, problems)``: ``(function name, S-expression)`` pairs, and one problem for
        source Python cannot parse or a function TorchScript's parser rejects.
    """
    import textwrap

    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError) as err:
        return [], [f"code cannot be parsed ({err.__class__.__name__}: {err}); cannot vet it"]
    try:
        import torch
    except ImportError:  # pragma: no cover - TorchScript submissions need torch anyway
        return [], ["torch is not installed; TorchScript code cannot be vetted"]
    lines = source.splitlines(keepends=True)
    trees: list[tuple[str, str]] = []
    problems: list[str] = []
    for node in ast.walk(module):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        text = textwrap.dedent("".join(lines[first - 1 : node.end_lineno]))
        try:
            tree = torch._C._parse_source_def(text)
        except Exception as err:  # RuntimeError from the C++ parser
            problems.append(
                f"TorchScript's parser rejects {node.name!r} ({str(err).splitlines()[0]}); "
                "cannot vet it"
            )
            continue
        trees.append((node.name, str(tree)))
    return trees, problems


def torchscript_source_problems(name: str, source: str) -> list[str]:
    """Refused ops named in one TorchScript source file of an archive, judged without running it.

    Serialized TorchScript names ``aten`` ops as ``torch.<op>(...)`` and other ops as
    ``ops.<namespace>.<op>(...)``; TorchScript has no dynamic attribute access, so an op the
    code can call must appear here by name. The file is read twice, and a problem in either
    refuses it: (1) as tokens, so whitespace, comments and line continuations between the
    parts of a dotted name cannot hide it (any appearance of a refused op's name is refused,
    whatever it is attached to); (2) with TorchScript's own parser, method by method, and the
    refused names and op namespaces are looked up in the parse trees it produces. Source that
    either parser cannot read is refused as unvettable.
    """
    out: set[str] = set()
    try:
        chains = _dotted_chains(source)
    except (tokenize.TokenError, SyntaxError) as err:
        return [f"{name}: code cannot be tokenized ({err}); cannot vet it"]
    for chain in chains:
        found = _chain_op(chain)
        if found is not None:
            ns, op = found
            if ns not in ALLOWED_NAMESPACES:
                out.add(f"{name}: calls custom op {ns}::{op} (only {sorted(ALLOWED_NAMESPACES)})")
            elif f"{ns}::{op}" in DENIED_OPS:
                shown = f"torch.{op}" if ns == "aten" else f"{ns}::{op}"
                out.add(f"{name}: calls {shown} (file access is not allowed)")
            continue
        for part in chain:
            if part in _DENIED_ATEN:
                out.add(
                    f"{name}: names {'.'.join(chain)!r}; {part!r} is an op that touches files "
                    "(not allowed anywhere in a submitted model)"
                )
    trees, problems = _parsed_by_torchscript(source)
    out.update(f"{name}: {p}" for p in problems)
    out.update(f"{name}: {p}" for p in _denied_strings(source))
    for fn, tree in trees:
        for ns in _SEXPR_OPS_NS.findall(tree):
            if ns not in ALLOWED_NAMESPACES:
                out.add(f"{name}: {fn} calls custom op namespace {ns!r} (TorchScript parse tree)")
        denied = sorted(set(_SEXPR_IDENT.findall(tree)) & _DENIED_ATEN)
        if denied and not any(f"calls torch.{d}" in p for p in out for d in denied):
            out.add(
                f"{name}: {fn} names {', '.join(denied)} (TorchScript parse tree; file access "
                "is not allowed)"
            )
    return sorted(out)


def torchscript_problems(path: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Everything wrong with a TorchScript archive, found without loading it.

    Returns:
        One line per problem; empty when the archive may be passed to ``torch.jit.load``.
    """
    if not path.is_file():
        return [f"{path}: TorchScript submission must be a file (torch.jit.save output)"]
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return [f"{path}: {size} bytes (at most {limits.max_file_bytes})"]
    kind = sniff(path)
    if kind == "pickle":
        return [pickle_refusal(path)]
    if kind != "zip":
        return [f"{path}: not a TorchScript archive (a zip written by torch.jit.save)"]
    problems = zip_problems(path, limits)
    if problems:
        return problems  # never read members of a structurally unsafe archive
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if _is_torch_save_zip(names):
            return [pickle_refusal(path) + " (this is a torch.save zip, not TorchScript)"]
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) != 1:
            return [
                f"{path}: TorchScript archive must have one top-level folder, has {sorted(tops)}"
            ]
        top = tops.pop()
        for required in ("data.pkl", "constants.pkl"):
            if f"{top}/{required}" not in names:
                problems.append(f"{path}: not a TorchScript archive (no {top}/{required})")
        if not any(n.startswith(f"{top}/code/") for n in names):
            problems.append(f"{path}: not a TorchScript archive (no {top}/code/)")
        for name in names:
            if name.endswith((".pkl", ".debug_pkl")):
                found, bad = pickle_globals(zf.read(name))
                problems += [f"{path}: {name}: {b}" for b in bad]
                for g in sorted(found):
                    if not global_allowed(g):
                        problems.append(
                            f"{path}: {name}: pickle references {g}, which cellbench cannot "
                            "vet (only TorchScript classes and tensor rebuild helpers allowed)"
                        )
            elif name.startswith(f"{top}/code/") and name.endswith(".py"):
                info = zf.getinfo(name)
                if info.file_size > limits.max_code_bytes:
                    problems.append(f"{path}: {name}: source too large to vet ({info.file_size})")
                    continue
                source = zf.read(name).decode("utf-8", errors="replace")
                problems += [f"{path}: {p}" for p in torchscript_source_problems(name, source)]
    return problems


def graph_op_problems(module: Any) -> list[str]:
    """Refused ops in every method graph of a loaded TorchScript module and its submodules."""
    problems: set[str] = set()

    def walk(nodes: Iterable[Any], where: str) -> None:
        for node in nodes:
            kind = node.kind()
            ns = kind.split("::", 1)[0]
            if kind in DENIED_OPS:
                problems.add(f"{where}: uses {kind}")
            elif ns not in ALLOWED_NAMESPACES:
                problems.add(f"{where}: uses op {kind} outside {sorted(ALLOWED_NAMESPACES)}")
            for block in node.blocks():
                walk(block.nodes(), where)

    for sub_name, sub in module.named_modules():
        c = sub._c
        for method in c._method_names():
            graph = c._get_method(method).inlined_graph
            walk(graph.nodes(), f"{sub_name or 'model'}.{method}")
    return sorted(problems)


# ---------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxInfo:
    """What cellbench needs to know about a vetted ONNX model.

    Attributes:
        input_name: Name of the single image input.
        input_shape: Declared input dims (int, or str for symbolic/unknown dims).
        output_names: Names of the outputs, in order.
        output_shapes: Declared output dims.
    """

    input_name: str
    input_shape: list[int | str]
    output_names: list[str]
    output_shapes: list[list[int | str]] = field(default_factory=list)


def _dims(value_info: Any) -> tuple[list[int | str], int]:
    t = value_info.type.tensor_type
    dims: list[int | str] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims, int(t.elem_type)


def tensor_bytes(dims: Sequence[int | str], elem_type: int) -> int:
    """Bytes of a tensor whose dims are all fixed (symbolic dims count as 1)."""
    n = _ONNX_ITEMSIZE.get(elem_type, 8)
    for d in dims:
        if isinstance(d, int):
            n *= max(d, 0)
    return n


def _shape_problems(where: str, dims: Sequence[int | str], elem: int, limits: Limits) -> list[str]:
    out = []
    for d in dims:
        if isinstance(d, int) and (d < 0 or d > limits.max_dim):
            out.append(f"{where}: declared dimension {d} is outside [0, {limits.max_dim}]")
    nbytes = tensor_bytes(dims, elem)
    if nbytes > limits.max_tensor_bytes:
        out.append(
            f"{where}: declared shape {list(dims)} needs {nbytes / GiB:.1f} GiB "
            f"(at most {limits.max_tensor_bytes / GiB:.1f} GiB); refused before allocating"
        )
    return out


def onnx_problems(
    path: Path, spatial_ndim: int | None = None, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[str], OnnxInfo | None]:
    """Check an ONNX model without creating an inference session.

    Args:
        path: The ``.onnx`` file.
        spatial_ndim: 2 or 3 when known: the input must be ``(1, C, [Z,] Y, X)``.
        limits: Size limits.

    Returns:
        ``(problems, info)``; ``info`` is None when the model could not be parsed.
    """
    import onnx

    if not path.is_file():
        return [f"{path}: ONNX submission must be a file"], None
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return [f"{path}: {size} bytes (at most {limits.max_file_bytes})"], None
    kind = sniff(path)
    if kind == "pickle":
        return [pickle_refusal(path)], None
    if kind == "zip":
        return [f"{path}: is a zip archive, not an ONNX model"], None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises several types for malformed input
        return [f"{path}: not a valid ONNX model ({type(err).__name__}: {err})"], None
    problems: list[str] = []
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # onnx.checker.ValidationError and friends
        problems.append(f"{path}: ONNX checker: {str(err).splitlines()[0]}")

    for opset in model.opset_import:
        if opset.domain not in ALLOWED_ONNX_DOMAINS:
            problems.append(f"{path}: custom operator domain {opset.domain!r} is not supported")
    for node in _all_nodes(model.graph):
        if node.domain not in ALLOWED_ONNX_DOMAINS:
            problems.append(
                f"{path}: node {node.name or node.op_type}: custom domain {node.domain!r}"
            )

    base = path.parent.resolve()
    for tensor in _all_initializers(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            location = entries.get("location", "")
            bad = member_name_problems(location)
            target = (base / location).resolve()
            if bad or not target.is_relative_to(base):
                problems.append(
                    f"{path}: initializer {tensor.name!r}: external data location {location!r} "
                    "must be a relative path inside the model's folder"
                )
            elif not target.is_file():
                problems.append(
                    f"{path}: initializer {tensor.name!r}: missing external file {location}"
                )
        dims = [int(d) for d in tensor.dims]
        problems += _shape_problems(
            f"{path}: initializer {tensor.name!r}", dims, tensor.data_type, limits
        )

    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    for vi in list(inputs) + list(graph.output) + list(graph.value_info):
        dims, elem = _dims(vi)
        problems += _shape_problems(f"{path}: tensor {vi.name!r}", dims, elem, limits)
    if len(inputs) != 1:
        problems.append(
            f"{path}: model must have exactly one input (the image), has {[i.name for i in inputs]}"
        )
        return problems, None
    in_dims, in_elem = _dims(inputs[0])
    if in_elem != onnx.TensorProto.FLOAT:
        problems.append(
            f"{path}: input {inputs[0].name!r} must be float32 (ONNX elem_type 1), got "
            f"elem_type {in_elem}"
        )
    if spatial_ndim is not None and len(in_dims) != spatial_ndim + 2:
        axes = "(1, C, Z, Y, X)" if spatial_ndim == 3 else "(1, C, Y, X)"
        problems.append(
            f"{path}: input {inputs[0].name!r} has rank {len(in_dims)}; this dataset needs {axes}"
        )
    if not graph.output:
        problems.append(f"{path}: model has no outputs")
    info = OnnxInfo(
        input_name=inputs[0].name,
        input_shape=in_dims,
        output_names=[o.name for o in graph.output],
        output_shapes=[_dims(o)[0] for o in graph.output],
    )
    return problems, info


def onnx_external_files(path: Path) -> list[str]:
    """Relative locations of an ONNX model's external tensor files (parsed, nothing loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = set()
    for tensor in _all_initializers(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            if entries.get("location"):
                out.add(entries["location"])
    return sorted(out)


def _all_nodes(graph: Any) -> Iterable[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def _all_initializers(graph: Any) -> Iterable[Any]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _all_initializers(attr.g)
            for g in attr.graphs:
                yield from _all_initializers(g)


def onnx_runtime_shape_problems(
    path: Path, info: OnnxInfo, shape: Sequence[int], limits: Limits = DEFAULT_LIMITS
) -> list[str]:
    """Check one concrete input shape: declared fixed dims, and every inferred tensor's size.

    Runs ONNX shape inference with the input bound to ``shape`` (no data, nothing allocated)
    and refuses if any tensor the model would create exceeds :attr:`Limits.max_tensor_bytes`.
    """
    import onnx

    problems = []
    if len(shape) != len(info.input_shape):
        return [f"{path}: input rank {len(info.input_shape)} but the image is {tuple(shape)}"]
    for i, (want, got) in enumerate(zip(info.input_shape, shape, strict=True)):
        if isinstance(want, int) and want != got:
            problems.append(
                f"{path}: input dim {i} is fixed to {want} but the image needs {got} (input "
                f"{tuple(shape)}); export the model with dynamic spatial axes"
            )
    if problems:
        return problems
    nbytes = 4
    for d in shape:
        nbytes *= int(d)
    if nbytes > limits.max_tensor_bytes:
        return [f"{path}: input {tuple(shape)} would need {nbytes / GiB:.1f} GiB"]
    model = onnx.load(str(path), load_external_data=False)
    init_names = {t.name for t in model.graph.initializer}
    target = next(i for i in model.graph.input if i.name not in init_names)
    dims = target.type.tensor_type.shape.dim
    for d, value in zip(dims, shape, strict=True):
        d.ClearField("dim_param")
        d.dim_value = int(value)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as err:  # inference errors are not fatal: the runtime re-checks
        return [f"{path}: shape inference failed for input {tuple(shape)} ({err})"]
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output):
        vdims, elem = _dims(vi)
        problems += _shape_problems(
            f"{path}: tensor {vi.name!r} for input {tuple(shape)}", vdims, elem, limits
        )
    return problems


# ---------------------------------------------------------------------------------- safetensors
def safetensors_header_problems(path: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Check a safetensors file's header (JSON, dtypes, offsets inside the file), not its data."""
    if not path.is_file():
        return [f"{path}: missing"]
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return [f"{path}: {size} bytes (at most {limits.max_file_bytes})"]
    kind = sniff(path)
    if kind == "pickle" or (kind == "zip" and _zip_has_pickle(path)):
        return [pickle_refusal(path) + " (named .safetensors but it is not)"]
    if size < 8:
        return [f"{path}: too short to be a safetensors file"]
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > min(100 << 20, size - 8):
            return [f"{path}: not a safetensors file (header length {n} invalid)"]
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return [f"{path}: not a safetensors file (header is not JSON: {err})"]
    if not isinstance(header, dict):
        return [f"{path}: not a safetensors file (header is not a JSON object)"]
    problems = []
    data_len = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            problems.append(f"{path}: tensor {name!r}: malformed header entry")
            continue
        dtype, offsets = entry.get("dtype"), entry.get("data_offsets")
        if dtype not in _SAFETENSORS_DTYPES:
            problems.append(f"{path}: tensor {name!r}: unknown dtype {dtype!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len
        ):
            problems.append(f"{path}: tensor {name!r}: data offsets {offsets} outside the file")
    return problems


def _zip_has_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith(".pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


#: File suffixes that usually hold pickles (named in refusals of model packages).
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def package_digest(path: Path) -> str:
    """sha256 identifying a model package: relative names and digests of :data:`PACKAGE_FILES`.

    Computed like :func:`cellbench.predictions.digest_path` on a folder holding only those two
    files, so logs, plots and training state beside them in a run directory do not count.
    """
    import hashlib

    from cellbench.predictions import digest_path

    folder = package_dir(path)
    h = hashlib.sha256()
    for name in sorted(PACKAGE_FILES):
        h.update(name.encode())
        h.update(digest_path(folder / name).encode())
    return h.hexdigest()


def package_problems(path: Path, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Check a safetensors model package (``model.json`` + ``model.safetensors``).

    ``path`` is the package folder (a training run directory works) or its ``model.json``.
    cellbench reads only those two files; anything else in the folder (logs, plots, the
    engine's training state) is neither read nor digested. A pickle checkpoint submitted
    instead of the package, or in place of ``model.safetensors``, is refused with one line.
    ``model.json`` must be a JSON object; the training engine checks its fields.
    """
    folder = package_dir(path)
    if folder.is_file():
        if sniff(folder) == "pickle" or (sniff(folder) == "zip" and _zip_has_pickle(folder)):
            return [pickle_refusal(folder)]
        return [
            f"{folder}: a safetensors submission is a model package folder holding model.json "
            "and model.safetensors (written by cellbench's training engine)"
        ]
    if not folder.is_dir():
        return [f"{folder}: does not exist"]
    problems = []
    weights = folder / "model.safetensors"
    if not weights.exists():
        pickles = [
            f
            for f in sorted(folder.iterdir())
            if f.is_file() and (sniff(f) == "pickle" or (sniff(f) == "zip" and _zip_has_pickle(f)))
        ]
        problems += [pickle_refusal(f) for f in pickles]
        problems.append(
            f"{folder}: model.safetensors is missing (export the weights as safetensors: "
            "cellbench's training engine writes model.json + model.safetensors)"
        )
    else:
        problems += safetensors_header_problems(weights, limits)
    config = folder / "model.json"
    if not config.is_file():
        problems.append(
            f"{folder}: model.json is missing (baseline name, config, spec, normalisation)"
        )
    else:
        problems += model_json_problems(config)
    return problems


#: Budgets of a model package's ``model.json``.
MAX_MODEL_JSON_BYTES = 1 << 20
MAX_SIDE = 65_536  # pixels along one axis of a tile, patch or fitted image
MAX_TILE_PIXELS = 1 << 28  # pixels of one tile or fitted image (1 GiB per float32 channel)
MAX_TILE_OVERLAP = 0.9  # an overlap of 1 never advances


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"key(s) {', '.join(map(repr, dups))} appear twice")
    return dict(pairs)


def _sizes_problems(where: str, value: Any, name: str) -> list[str]:
    if value in (None, []):
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return [f"{where}: {name} must be a list of 1-3 integers, got {str(value)[:60]}"]
    if not all(1 <= v <= MAX_SIDE for v in value):
        return [f"{where}: {name} {value} must hold sizes between 1 and {MAX_SIDE}"]
    pixels = 1
    for v in value:
        pixels *= v
    if pixels > MAX_TILE_PIXELS:
        return [
            f"{where}: {name} {value} asks for {pixels * 4 / GiB:.0f} GiB per float32 channel "
            f"(at most {MAX_TILE_PIXELS} pixels); refused before loading"
        ]
    return []


def model_json_problems(path: Path) -> list[str]:
    """Check a model package's ``model.json`` before anything is built from it.

    Structure (an object whose ``config``, ``spec``, ``normalisation`` and ``inference`` are
    objects), the normalisation mode, percentiles, and the inference settings: tile, patch
    and image sizes within :data:`MAX_SIDE` and :data:`MAX_TILE_PIXELS`, a tile overlap in
    ``[0, MAX_TILE_OVERLAP]``, known sample mode, fit and precision. Duplicate keys and
    excessive size or nesting are refused.

    Returns:
        One line per problem.
    """
    where = str(path)
    size = path.stat().st_size
    if size > MAX_MODEL_JSON_BYTES:
        return [f"{where}: {size} bytes (at most {MAX_MODEL_JSON_BYTES})"]
    try:
        data = json.loads(path.read_bytes(), object_pairs_hook=_unique_keys)
    except RecursionError:
        return [f"{where}: nested too deeply"]
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, duplicate keys
        return [f"{where}: not valid JSON ({str(err).splitlines()[0][:200]})"]
    if not isinstance(data, dict):
        return [f"{where}: must be a JSON object"]
    out: list[str] = []
    for key in ("config", "spec", "normalisation", "inference"):
        if key in data and not isinstance(data[key], dict):
            out.append(f"{where}: {key} must be an object, got {type(data[key]).__name__}")
    if "baseline" in data and not isinstance(data["baseline"], str):
        out.append(f"{where}: baseline must be a name")
    norm = data.get("normalisation")
    if isinstance(norm, dict):
        from cellbench.training.normalisation import MODES, TARGET_MODES

        mode = norm.get("mode", "percentile")
        if mode not in MODES:
            out.append(f"{where}: normalisation.mode {str(mode)[:40]!r} is not one of {MODES}")
        target = norm.get("target_mode", "none")
        if target not in TARGET_MODES:
            out.append(
                f"{where}: normalisation.target_mode {str(target)[:40]!r} is not one of "
                f"{TARGET_MODES}"
            )
        low, high = norm.get("low", 1.0), norm.get("high", 99.8)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not 0 <= low < high <= 100:
            out.append(
                f"{where}: normalisation percentiles must satisfy 0 <= low < high <= 100 "
                f"(got {str(low)[:20]}, {str(high)[:20]})"
            )
    inference = data.get("inference")
    sources = [("inference", inference), ("config", data.get("config"))]
    for section, block in sources:
        if not isinstance(block, dict):
            continue
        at = f"{where}: {section}"
        for name in ("patch_size", "tile_size", "image_size"):
            if name in block:
                out += _sizes_problems(at, block[name], name)
        if "tile_overlap" in block:
            ov = block["tile_overlap"]
            if (
                not isinstance(ov, int | float)
                or isinstance(ov, bool)
                or not 0 <= ov <= MAX_TILE_OVERLAP
            ):
                out.append(f"{at}: tile_overlap {str(ov)[:20]} must be in [0, {MAX_TILE_OVERLAP}]")
    if isinstance(inference, dict):
        for name, allowed in (
            ("sample_mode", ("patch", "image")),
            ("image_fit", ("pad", "resize")),
            ("precision", ("fp32", "bf16")),
        ):
            if name in inference and inference[name] not in allowed:
                out.append(
                    f"{where}: inference.{name} {str(inference[name])[:40]!r} is not one of "
                    f"{allowed}"
                )
    return out
