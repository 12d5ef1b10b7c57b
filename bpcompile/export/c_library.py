"""`export --to c`: a trained network as a C library, from the llvm backend's own kernels.

One LLVM module is linked from: the network's entry functions (codegen.py; `forward` in
inference mode, `value_and_grad` and `step` in training mode), printed without BLAS, so
every product is our own loop nest; the prebuilt library those call (prebuilt.py); and the
C interface around them (c_abi.py), which holds the trained params as data. Everything but
the `NET_*` functions is then made internal, so that two exported networks link into one
program side by side, and the module is optimized at O3 and written as a relocatable
(position-independent) object for the host CPU, or for `cpu` (e.g. "x86-64": any x86-64).
The object calls nothing but the C library (aligned_alloc, free, memcpy, memset, strcmp)
and libm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..backends.llvm.codegen import generate
from ..backends.llvm.jit import host, optimize, vector_bytes
from ..backends.llvm.prebuilt import library_ir
from ..driver import build
from ..errors import BPError
from ..runtime.net import CompiledNet
from ..training.checkpoint import optimizer_text
from .c_abi import Interface, Part
from .c_header import header

TRAINING = ("value_and_grad", "step")


@dataclass(frozen=True)
class Library:
    """An exported network: `NET.h` and the object file."""

    prefix: str
    header: str
    object_code: bytes


def c_prefix(network: str) -> str:
    """The network's name as a C identifier, the prefix of every exported symbol."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in network)
    return f"net_{name}" if not name or name[0].isdigit() else name


def library(net: CompiledNet, params: Mapping[str, np.ndarray], cpu: str | None = None
            ) -> Library:
    """The C library of `net` (any backend) holding `params` (checked by the caller)."""
    import llvmlite.binding as llvm

    signature, dtype = net.signature, np.dtype(net.dtype)
    prefix = c_prefix(net.name)
    width = vector_bytes() if cpu is None else 16  # a named CPU: SSE2's vectors only
    modes = {"train": (signature, net.compiled,
                       (("forward",) if not signature.modal else ()) +
                       (TRAINING if signature.has_loss else ()))}
    if signature.modal:
        modes["infer"] = (signature.for_inference(),
                          build(signature.source, signature.filename, training=False),
                          ("forward",))
    parts: dict[str, Part] = {}
    linked = llvm.parse_assembly(library_ir(dtype.name, width, blas=False, fast_path=False))
    for mode, (mode_signature, compiled, entries) in modes.items():
        program = generate(compiled, mode_signature, dtype.name, width, entries, blas=False)
        module = llvm.parse_assembly(program.ir)
        for entry in entries:
            symbol = f"bpc_{mode}_{entry}"
            module.get_function(f"bpc_{entry}").name = symbol
            parts[entry] = Part(symbol, mode_signature, tuple(program.workspace[entry]))
        _internalize(module, keep=set(p.symbol for p in parts.values()))
        linked.link_in(module)
    ordered = {entry: parts[entry] for entry in ("forward", *TRAINING) if entry in parts}
    linked.link_in(llvm.parse_assembly(Interface(prefix, signature, dtype, params,
                                                 ordered).write()))
    _internalize(linked, keep=None, prefix=f"{prefix}_")
    linked.name = prefix
    machine = _object_machine(cpu)
    linked.triple = machine.triple
    linked.data_layout = str(machine.target_data)
    linked.verify()
    if cpu is None:
        optimize(linked)
    else:
        _optimize_for(linked, machine)
    undefined = sorted(f.name for f in linked.functions
                       if f.is_declaration and not f.name.startswith("llvm."))
    _check_externals(undefined)
    return Library(prefix, header(prefix, signature, dtype, ordered, optimizer_text(net)),
                   machine.emit_object(linked))


def _internalize(module: object, keep: set[str] | None, prefix: str = "") -> None:
    """Give every definition internal linkage but those in `keep` (or, with keep None, those
    whose name starts with `prefix`)."""
    import llvmlite.binding as llvm

    for value in [*module.functions, *module.global_variables]:  # type: ignore[attr-defined]
        if value.is_declaration:
            continue
        kept = value.name in keep if keep is not None else value.name.startswith(prefix)
        if not kept:
            value.linkage = llvm.Linkage.internal


# what the object may call: the C library's and the math library's functions
LIBC = {"aligned_alloc", "free", "memcpy", "memmove", "memset", "strcmp"}


def _check_externals(undefined: list[str]) -> None:
    """The exported code must call no Python, NumPy or BLAS: every function it leaves
    undefined is the C library's or libm's (a math function LLVM lowers an intrinsic to)."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    foreign = [name for name in undefined if name not in LIBC and not hasattr(libm, name)]
    if foreign:
        raise BPError(f"export --to c: the compiled network calls {', '.join(foreign)}, "
                      f"which is not in the C or math library; this is a bug in bpcompile")


def _object_machine(cpu: str | None) -> object:
    """A target machine writing position-independent code, for the host CPU or `cpu`."""
    import llvmlite.binding as llvm

    from ..backends.llvm.jit import _initialize

    _initialize()
    name, features = host() if cpu is None else (cpu, "")
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=name, features=features, opt=3, reloc="pic",
                                        codemodel="default")


def _optimize_for(module: object, machine: object) -> None:
    import llvmlite.binding as llvm

    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.slp_vectorization = True
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(module, builder)


def export(net: CompiledNet, params: Mapping[str, np.ndarray], folder: str | Path,
           cpu: str | None = None) -> tuple[Path, Path]:
    """Write NET.h and NET.o into `folder` (made if absent), atomically; their paths."""
    built = library(net, params, cpu)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header_path, object_path = folder / f"{built.prefix}.h", folder / f"{built.prefix}.o"
    atomic.write_text(header_path, built.header)
    atomic.write_bytes(object_path, built.object_code)
    return header_path, object_path
