"""What the native fast path of `step` needs at run time, without llvmlite: where NumPy
keeps an array's fields (found on a live array and verified), the Python C-API functions
the compiled code calls, the slots of the context global it reads, and the builtin
function object that makes it `net.step`. fastcall.py writes the IR that uses them."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .layout import Layout

C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400
METH_FASTCALL, METH_KEYWORDS = 0x80, 0x2
TUPLE_SIZE, TUPLE_ITEMS = 16, 24  # PyVarObject ob_size; PyTupleObject ob_item
OB_TYPE = 8

PYTHON_API = ("PyDict_GetItem", "PyDict_Size", "PyFloat_FromDouble", "PyObject_Vectorcall",
              "PyEval_SaveThread", "PyEval_RestoreThread", "Py_IncRef", "Py_DecRef")


@dataclass(frozen=True)
class ArrayFields:
    """Byte offsets of the PyArrayObject fields the fast path reads."""

    data: int
    nd: int
    dimensions: int
    descr: int
    flags: int


@lru_cache(maxsize=1)
def array_fields() -> ArrayFields | None:
    """Find the fields on a live array and verify them, or None if they are not where the
    public struct puts them (an unusual build): then there is no fast path."""
    probe = np.zeros((3, 5), dtype=np.float64)
    base = id(probe)
    candidates = ArrayFields(data=16, nd=24, dimensions=32, descr=56, flags=64)

    def word(offset: int) -> int:
        return ctypes.c_void_p.from_address(base + offset).value or 0

    try:
        ok = (
            word(candidates.data) == probe.ctypes.data
            and ctypes.c_int.from_address(base + candidates.nd).value == 2
            and word(candidates.descr) == id(probe.dtype)
            and ctypes.c_int.from_address(base + candidates.flags).value & 0xFFFF
            == probe.flags.num & 0xFFFF
            and [ctypes.c_int64.from_address(word(candidates.dimensions) + 8 * k).value
                 for k in range(2)] == [3, 5]
            and ctypes.c_void_p.from_address(id(probe) + OB_TYPE).value == id(np.ndarray)
        )
    except (ValueError, OSError):
        ok = False
    return candidates if ok else None


def python_symbols() -> dict[str, int]:
    """Addresses of the C-API functions the fast path calls."""
    return {name: ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
            for name in PYTHON_API}


@dataclass(frozen=True)
class Context:
    """The slots of the global the fast path reads, filled from Python after compiling."""

    layout: Layout

    # RNG: the interned "rng" (the state entry holding dropout's seed and step count),
    # RNG_DESCR: uint64's dtype, that entry's
    TABLE, LOSS, NDARRAY, DICT, DESCR, RNG, RNG_DESCR = range(7)
    FIRST_KEY = 7

    def key(self, kind: str, name: str) -> int:
        """Slot of the interned str object for a param, state or data name."""
        names = {"param": self.layout.params, "state": self.layout.state,
                 "data": self.layout.data}
        offset = self.FIRST_KEY
        for group in ("param", "state", "data"):
            if group == kind:
                return offset + names[group].index(name)
            offset += len(names[group])
        raise KeyError(kind)

    @property
    def size(self) -> int:
        layout = self.layout
        return self.FIRST_KEY + len(layout.params) + len(layout.state) + len(layout.data)


class PyMethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


_new_function = ctypes.pythonapi.PyCFunction_NewEx
_new_function.restype = ctypes.py_object
_new_function.argtypes = [ctypes.POINTER(PyMethodDef), ctypes.py_object, ctypes.py_object]


def builtin(address: int, fallback: object, name: str, doc: str) -> tuple[object, PyMethodDef]:
    """A builtin function calling the native code at `address` with `fallback` as its self.

    Returns the function and its method definition, which must outlive the function.
    """
    definition = PyMethodDef(name.encode(), address, METH_FASTCALL | METH_KEYWORDS, doc.encode())
    return _new_function(ctypes.byref(definition), fallback, None), definition
