"""Count what would make a GPU wait for the host, while running on the CPU.

On a GPU these stall the step: reading a value back (``item``, ``bool``, ``float``, ``tolist``, ``cpu``, ``numpy``),
ops whose output shape depends on the data (``nonzero``, ``unique``, boolean-mask indexing, ``masked_select``,
``repeat_interleave`` by a tensor) and tensors built from host data (``torch.tensor([...], device=...)``: a copy
from the host each step). ``SyncCounter`` records each one with the scope it happened in (the name given to
``scope()``, e.g. inside Ultralytics' assigner), so a test can compare a step with Ultralytics' own.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
HOST_READ = {aten._local_scalar_dense.default}
DATA_SHAPED = {
    aten.nonzero.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.masked_select.default,
    aten.repeat_interleave.Tensor,
}
FROM_HOST = {aten.lift_fresh.default}
INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}
HOST_COPY_METHODS = {"tolist", "cpu", "numpy"}


def _bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _Dispatch(TorchDispatchMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READ:
            self.counter.add("host read (item/bool/float)")
        elif func in DATA_SHAPED:
            self.counter.add(f"data-dependent shape ({func.__name__.split('.')[0]})")
        elif func in FROM_HOST:
            self.counter.add("tensor from host data")
        elif func in INDEXING and _bool_index(args):
            self.counter.add("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_COPY_METHODS:
            self.counter.add(f"copy to host ({name})")
        elif name == "to" and any(str(a) == "cpu" for a in (*args[1:], *(kwargs or {}).values())):
            self.counter.add("copy to host (to cpu)")
        return func(*args, **(kwargs or {}))


class SyncCounter:
    """Context manager counting host synchronisations by ``(scope, kind)``.

    Examples:
        >>> with SyncCounter() as c:
        ...     x.sum().item()
        >>> c.counts
        Counter({('step', 'host read (item/bool/float)'): 1})
    """

    def __init__(self):
        """Start empty, in scope ``step``."""
        self.counts: Counter = Counter()
        self.current = "step"

    def add(self, kind: str) -> None:
        """Record one event in the current scope."""
        self.counts[(self.current, kind)] += 1

    @contextmanager
    def scope(self, name: str):
        """Attribute the events of the block to ``name``."""
        outer, self.current = self.current, name
        try:
            yield
        finally:
            self.current = outer

    def __enter__(self) -> SyncCounter:
        self._modes = [_Function(self), _Dispatch(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def in_scope(self, name: str) -> Counter:
        """The events of one scope, by kind."""
        return Counter({kind: n for (scope, kind), n in self.counts.items() if scope == name})
