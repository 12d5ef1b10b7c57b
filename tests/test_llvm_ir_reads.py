"""The LLVM module reads as the network does: it names the `.bp` file it comes from and the
host it is compiled for, each kernel after the values it computes, and each buffer of an
entry function after its value.

Oracles: LLVM's own parser (the text is a valid module, its functions and their names), the
host's triple as llvmlite reports it, and the naming source (graph/naming.py) the NumPy
module's variables come from.
"""

from __future__ import annotations

import re
from pathlib import Path

import llvmlite.binding as llvm

import bpcompile as bpc
from bpcompile.backends.llvm.codegen import generate
from bpcompile.backends.llvm.jit import target_machine, vector_bytes
from bpcompile.graph.naming import Naming

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_module_names_its_file_and_host() -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm")
    module = llvm.parse_assembly(net.code())
    assert module.source_file == "xor.bp"
    assert module.triple == target_machine().triple and "unknown-unknown" not in module.triple
    assert "; ModuleID = 'xor'" in net.code()


def test_a_filename_with_quotes_and_backslashes_survives() -> None:
    net = bpc.compile("param w[2]\nloss sum(w * w)\n", backend="llvm", filename='a "b"\\c.bp')
    assert llvm.parse_assembly(net.code()).source_file == 'a "b"\\c.bp'


def test_kernels_are_named_after_the_values_they_compute() -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm")
    program = generate(net.compiled, net.signature, "float64", vector_bytes(),
                       ("value_and_grad",))
    naming = Naming(program.graph)
    for i, called in program.functions["value_and_grad"].items():
        for function in called:
            if function.startswith("bpc.") and not function.startswith("bpc_prebuilt"):
                computed = function[len("bpc."):].split("+")
                assert naming[i].code in computed or computed[-1].endswith("_more"), \
                    (function, naming[i].code)
    defined = set(re.findall(r'define [^@]*@"?([\w.+]+)"?\(', program.ir))
    assert {"bpc.d_y_pre", "bpc.d_h_pre", "bpc.h+y"} <= defined


def test_buffers_are_named_after_their_values() -> None:
    """Each workspace buffer of an entry function is `%NAME = getelementptr ... workspace,
    %OFFSET`, its offset the `.end` of the buffer before it."""
    net = bpc.compile_file(EXAMPLES / "digits.bp", backend="llvm")
    program = generate(net.compiled, net.signature, "float64", vector_bytes(), ("step",))
    names = {n.code for n in Naming(program.graph).names.values()}
    text = str(llvm.parse_assembly(program.ir))  # as LLVM prints it: names unquoted
    body = text.split("define i32 @bpc_step(")[1].split("\n}\n")[0]
    buffers = re.findall(r"%([\w.]+) = getelementptr i8, ptr %workspace, i64 (\S+)", body)
    assert buffers
    for name, offset in buffers:
        assert name in names or name.startswith("new_"), name
        assert offset == "0" or offset.endswith(".end"), (name, offset)
