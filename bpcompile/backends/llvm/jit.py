"""From IR text to callable machine code, tuned for the host CPU.

`TargetMachine` for the host CPU name and features at O3, the new pass manager's O3 pipeline
with loop and SLP vectorization, then MCJIT. An `Engine` owns its execution engine: function
addresses stay valid for as long as the Engine object lives, so callers keep it referenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import llvmlite.binding as llvm


@lru_cache(maxsize=1)
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@lru_cache(maxsize=1)
def host() -> tuple[str, str]:
    """(CPU name, feature string) of this machine: part of every cache key."""
    _initialize()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def new_target_machine() -> llvm.TargetMachine:
    """A target machine for the host CPU at O3. An execution engine takes ownership of the
    one it is given (and frees it with itself), so every engine needs its own."""
    _initialize()
    cpu, features = host()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3,
                                        codemodel="jitdefault")


@lru_cache(maxsize=1)
def target_machine() -> llvm.TargetMachine:
    """The shared target machine for optimizing and for triples; never given to an engine."""
    return new_target_machine()


def vector_bytes() -> int:
    """The widest vector register the host has, in bytes."""
    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return 64
    if features.get("avx") or features.get("avx2"):
        return 32
    return 16


def optimize(module: llvm.ModuleRef) -> None:
    """Run the O3 pipeline for the host CPU, with SLP vectorization.

    The kernels are written with explicit vectors (kernels.py, matmul.py), so LLVM's loop
    vectorizer and unroller would only multiply the code and the compile time (they more
    than doubled it on digits.bp): they are off.
    """
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = False
    tuning.slp_vectorization = True
    tuning.loop_unrolling = False
    builder = llvm.create_pass_builder(target_machine(), tuning)
    builder.getModulePassManager().run(module, builder)


@dataclass
class Engine:
    """A JIT-compiled module; keep it alive while its functions may be called."""

    engine: llvm.ExecutionEngine
    module: llvm.ModuleRef
    symbols: dict[str, int] = field(default_factory=dict)

    def address(self, name: str) -> int:
        if name not in self.symbols:
            self.symbols[name] = self.engine.get_function_address(name)
        return self.symbols[name]


def compile_ir(ir_text: str, object_code: bytes | None = None,
               symbols: dict[str, int] | None = None) -> tuple[Engine, bytes]:
    """JIT `ir_text` (optimizing it), or load `object_code` compiled from it earlier;
    `symbols` gives the addresses of external functions it calls.

    Returns the engine and the object code, which the disk cache stores.
    """
    _initialize()
    for name, address in (symbols or {}).items():
        llvm.add_symbol(name, address)
    module = llvm.parse_assembly(ir_text)
    module.triple = target_machine().triple
    module.data_layout = str(target_machine().target_data)
    module.verify()
    produced: list[bytes] = []
    if object_code is None:
        optimize(module)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly("") if object_code else module,
                                        new_target_machine())
    if object_code is not None:
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
    else:
        engine.set_object_cache(notify_func=lambda mod, data: produced.append(data))
    engine.finalize_object()
    return Engine(engine, module), (object_code if object_code is not None else
                                    (produced[0] if produced else b""))
