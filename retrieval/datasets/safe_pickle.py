"""Pickled ground truth, read without running the code a pickle may carry.

Public benchmark files are pickles: revisitop's `gnd_*.pkl`, VPR-Bench's object-array
`ground_truth_new.npy`, the PROxford/PRParis label index, VoxDet-SoIR's `anns.pt`. Unpickling
can call any importable function, so a downloaded file could run code. These files only ever
hold plain containers, numbers, strings and numpy arrays, so every reader here rebuilds exactly
those and refuses anything else, naming the file and what it asked for. A damaged file is an
`UnreadableFile` naming it: both are one line at the command line.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import UserError, brief, unreadable

NUMPY_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x and 2.x names
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}
"""What pickled numpy arrays, dtypes and scalars name; none of them runs code."""

PLAIN_GLOBALS = frozenset({("_codecs", "encode")})
"""Protocol-2 pickles (torch.save's default) spell `bytes` as a call of `_codecs.encode`."""


REDOWNLOAD = "re-download it from its publisher"
"""What to do about a damaged ground-truth file."""


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The file asks for an object beyond the allow-list: loading it could run code."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds plain types and numpy arrays/scalars only; the file is named in every refusal."""

    def __init__(self, handle: Any, source: Path) -> None:
        super().__init__(handle)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS | PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from {self.source}: ground-truth files hold only "
            "containers, numbers, strings and numpy arrays, and this object could run code. "
            "Re-download the file from its publisher."
        )


def _restricted_load(handle: Any, source: Path, what: str) -> Any:
    try:
        return _RestrictedUnpickler(handle, source).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # truncated, corrupt, or not a pickle at all
        raise unreadable(source, what, f"corrupt or not a pickle ({brief(error)})", REDOWNLOAD) from error


def load_pickle(path: Path) -> Any:
    """The content of a pickle file, through the restricted unpickler."""
    with open(path, "rb") as handle:
        return _restricted_load(handle, Path(path), "pickle file")


def load_npy(path: Path) -> np.ndarray:
    """A `.npy` array. An object array is a pickle after the header: its elements are read
    through the restricted unpickler, never with `allow_pickle=True`."""
    path = Path(path)
    what = ".npy array file"
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(handle)
        except ValueError as error:
            raise unreadable(path, what, f"no .npy header ({error})", REDOWNLOAD) from error
        if not dtype.hasobject:
            handle.seek(0)
            try:
                return np.load(handle, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:  # cut short after its header
                reason = f"its {dtype} array of shape {shape} cannot be read ({brief(error)})"
                raise unreadable(path, what, reason, REDOWNLOAD) from error
        array = _restricted_load(handle, path, what)
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise unreadable(path, what, f"the pickled array does not match its header (shape {shape})", REDOWNLOAD)
    return array


def torch_safe_globals() -> list[Any]:
    """`NUMPY_GLOBALS` for `torch.load(weights_only=True)`, whose unpickler also checks the
    classes it sets state on, hence the numpy dtype classes. Object arrays are left out: they
    are the one numpy type that carries arbitrary objects."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed: list[Any] = [np.dtype, np.ndarray]
    for module, name in sorted(NUMPY_GLOBALS):
        if module.endswith("multiarray"):
            allowed.append((getattr(multiarray, name), f"{module}.{name}"))
    allowed += [
        dtype_class
        for dtype_class in vars(np.dtypes).values()
        if isinstance(dtype_class, type)
        and issubclass(dtype_class, np.dtype)
        and dtype_class is not np.dtypes.ObjectDType
    ]
    return allowed
