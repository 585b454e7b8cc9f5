"""Placement bugs found on a machine without a GPU: :class:`PretendCuda` runs real CPU tensors while the code under
test is told it runs on ``cuda``.

The bug class: a tensor created without ``device=`` (or kept as a plain attribute that ``model.to(device)`` does not
move) that later meets a tensor on the GPU. On a CPU machine both are CPU tensors and nothing fails; on a GPU it is
``RuntimeError: Expected all tensors to be on the same device``.

How: a ``TorchFunctionMode`` sees every torch call at the API level (before arguments reach C++) and keeps a tag per
tensor object - ``"cuda"`` or ``"cpu"``, or none when the tensor was made where the mode cannot see (C++ autograd
grads, tensors older than the mode); an untagged tensor matches either side, so it can hide a bug but never raise a
false alarm.

* Every call with ``device=`` pointing at cuda (``torch.zeros(n, device=x.device)``, ``.to("cuda")``, ``.cuda()``,
  ``Module.to``) runs on the CPU and its result is tagged cuda; ``.to``/``.cpu()`` that change the tag return a copy,
  as on a real GPU.
* A call without ``device=`` and without tensor operands (``torch.zeros(n)``, ``torch.arange``, ``torch.from_numpy``)
  is tagged cpu; any other result inherits cuda from a cuda operand, else cpu from a cpu operand.
* ``.device`` / ``.is_cuda`` / ``.is_cpu`` / ``.get_device()`` of a cuda-tagged tensor say cuda, so code that reads
  a device gets the one it would get on a GPU.
* An operation whose tensor operands are tagged both cuda and cpu raises :class:`PlacementError` - with CUDA's own
  exemptions: CPU 0-dim tensors mix with anything (CPU scalars), indexing a cuda tensor with CPU index tensors is
  allowed (``x[cpu_index]``, ``x[cpu_index] = v``), copies (``copy_``, basic-slice assignment, ``.to``) cross devices,
  and so do data sources of an explicit ``device=`` call (``torch.as_tensor(cpu, device=cuda)``). ``.numpy()`` of a
  cuda tensor raises too, and so does a CPU ``generator=`` driving a cuda draw.

* A custom ``autograd.Function``'s Python ``backward`` runs under the mode too, its incoming gradients tagged like the
  forward outputs they belong to; ``torch.load(map_location=cuda)`` loads onto the CPU, tagged cuda.

Not covered (untagged, so never a false alarm): what autograd's C++ engine computes in ``backward()``, tensors built
before entering the mode, the unpacked saved outputs of a custom Function, ``torch.load`` without ``map_location``.
"""

import contextlib
import weakref

import torch
from torch.autograd.function import BackwardCFunction, Function
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

CUDA = torch.device("cuda", 0)
_CPU = torch.device("cpu")


class PlacementError(RuntimeError):
    """Two operands of one operation would sit on different devices on a GPU."""


def _is_tensor(value):
    return isinstance(value, torch.Tensor)


def _device_kind(value):
    """'cuda' / 'cpu' for a device-like value (torch.device, 'cuda:0', 0), None otherwise."""
    if isinstance(value, torch.device):
        return value.type
    if isinstance(value, str):
        return torch.device(value).type
    if isinstance(value, int) and not isinstance(value, bool):
        return "cuda"  # .to(0) / .cuda(0)
    return None


class PretendCuda(TorchFunctionMode):
    """Context manager: inside it, code told ``device="cuda"`` runs on the CPU and every cross-device meeting of
    tensors raises :class:`PlacementError` (see the module docstring). ``checked`` counts the operations that had a
    cuda operand (a run where it stays 0 did not exercise the device at all)."""

    def __init__(self):
        super().__init__()
        self._tags = {}
        self._refs = {}
        self.checked = 0
        self._saved_from_numpy = None
        self._depth = 0

    # -- tags ------------------------------------------------------------------------------------------------------
    def tag(self, tensor):
        """'cuda', 'cpu' or None (untagged: made where the mode could not see)."""
        return self._tags.get(id(tensor)) if _is_tensor(tensor) else None

    def _set(self, tensor, tag):
        key = id(tensor)
        if key not in self._refs:
            self._refs[key] = weakref.ref(tensor, lambda _, key=key: self._forget(key))
        self._tags[key] = tag

    def _forget(self, key):
        self._tags.pop(key, None)
        self._refs.pop(key, None)

    def _tag_new(self, result, tag, inputs=()):
        """Tag the tensors of ``result`` that are not among ``inputs`` (in-place results keep theirs) with ``tag``;
        an input returned as it is keeps its tag unless it had none."""
        if tag is None:
            return
        seen = {id(t) for t in inputs}
        for out in tree_flatten(result)[0]:
            if _is_tensor(out) and (id(out) not in seen or self.tag(out) is None):
                self._set(out, tag)

    def __enter__(self):
        if self._depth == 0:
            self._saved_from_numpy = torch.from_numpy
            mode = self

            def from_numpy(array):  # not a torch-function call: tag its result here
                out = mode._saved_from_numpy(array)
                mode._set(out, "cpu")
                return out

            torch.from_numpy = from_numpy
            self._saved_load = torch.load

            def load(*args, **kwargs):  # checkpoints: map_location=cuda loads onto the CPU, tagged cuda
                target = kwargs.get("map_location")
                kind = _device_kind(target) if isinstance(target, (str, torch.device)) else None
                if kind == "cuda":
                    kwargs["map_location"] = _CPU
                out = mode._saved_load(*args, **kwargs)
                if kind is not None:  # without map_location, tensors return where they were saved: unknown here
                    for tensor in tree_flatten(out)[0]:
                        if _is_tensor(tensor):
                            mode._set(tensor, kind)
                return out

            torch.load = load
            # A custom autograd Function: its forward outputs' tags are kept on their backward node, and autograd
            # (which runs the Python backward outside any mode) runs it under this mode, its incoming gradients
            # tagged like the outputs they belong to.
            self._saved_apply = Function.__dict__["apply"]
            self._saved_backward_apply = BackwardCFunction.apply

            def apply(cls, *args, **kwargs):
                out = mode._saved_apply.__get__(None, cls)(*args, **kwargs)
                outputs = out if isinstance(out, tuple) else (out,)
                node = next((t.grad_fn for t in outputs if _is_tensor(t) and t.grad_fn is not None), None)
                if node is not None:
                    node._placement_tags = tuple(mode.tag(t) for t in outputs)
                return out

            def backward_apply(node, *grads):
                for grad, tag in zip(grads, getattr(node, "_placement_tags", ())):
                    if _is_tensor(grad) and mode.tag(grad) is None and tag is not None:
                        mode._set(grad, tag)
                with mode:
                    return mode._saved_backward_apply(node, *grads)

            Function.apply = classmethod(apply)
            BackwardCFunction.apply = backward_apply
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            torch.from_numpy = self._saved_from_numpy
            torch.load = self._saved_load
            BackwardCFunction.apply = self._saved_backward_apply
            Function.apply = self._saved_apply
        return super().__exit__(*exc)

    # -- checks ----------------------------------------------------------------------------------------------------
    def _fail(self, what, func, operands):
        described = ", ".join(f"{self.tag(t)}{tuple(t.shape)}" for t in operands)
        raise PlacementError(f"{what} in {_name(func)}: operands {described} would be on different devices on a GPU")

    def _check_mixed(self, func, tensors):
        cuda = [t for t in tensors if self.tag(t) == "cuda"]
        cpu = [t for t in tensors if self.tag(t) == "cpu" and t.dim() > 0]
        if cuda:
            self.checked += 1
        if cuda and cpu:
            self._fail("cuda and CPU tensors meet", func, cuda[:1] + cpu[:1])
        return cuda, cpu

    def _result_tag(self, tensors, cuda, cpu):
        if cuda:
            return "cuda"
        if cpu:
            return "cpu"
        if all(self.tag(t) == "cpu" for t in tensors):  # no operand (a factory) or only CPU scalars
            return "cpu"
        return None

    def _check_generator(self, func, kwargs, target):
        generator = kwargs.get("generator")
        if target == "cuda" and isinstance(generator, torch.Generator) and generator.device.type == "cpu":
            raise PlacementError(f"{_name(func)} draws on cuda with a CPU generator (it must be created on the "
                                 "same device)")

    # -- the mode --------------------------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = _name(func)
        if name == "__get__":
            return self._getter(func, args)
        if name == "__set__":
            func(*args, **kwargs)
            owner, value = args[0], args[1]
            if func.__self__.__name__ == "data" and self.tag(value) is not None:
                self._set(owner, self.tag(value))
            return None
        if name in ("to", "cuda", "cpu") and args and _is_tensor(args[0]):
            return self._move(func, name, args, kwargs)
        if name in ("numpy", "__array__") and self.tag(args[0]) == "cuda":
            raise PlacementError(f"{name}() of a cuda tensor (on a GPU: 'can't convert cuda:0 device type tensor "
                                 "to numpy'; call .cpu() first)")
        if name in _PASS_THROUGH:
            return func(*args, **kwargs)
        if name == "__setitem__":
            return self._setitem(func, args, kwargs)
        if name in ("__getitem__", "index_put_", "index_put"):
            return self._index(func, args, kwargs)
        if name == "get_device" and self.tag(args[0]) == "cuda":
            return 0
        if name == "copy_":
            return func(*args, **kwargs)  # copies cross devices
        tensors = [t for t in tree_flatten((args, kwargs))[0] if _is_tensor(t)]
        if "device" in kwargs and _device_kind(kwargs["device"]) is not None:
            target = _device_kind(kwargs["device"])
            if target == "cuda":
                kwargs["device"] = _CPU
                self.checked += 1
            self._check_generator(func, kwargs, target)
            result = func(*args, **kwargs)
            self._tag_new(result, target, tensors)
            return result
        cuda, cpu = self._check_mixed(func, tensors)
        tag = self._result_tag(tensors, cuda, cpu)
        self._check_generator(func, kwargs, tag)
        result = func(*args, **kwargs)
        self._tag_new(result, tag, tensors)
        return result

    def _getter(self, func, args):
        owner = args[0]
        prop = func.__self__.__name__
        cuda = self.tag(owner) == "cuda"
        if prop == "device":
            return CUDA if cuda else func(*args)
        if prop == "is_cuda":
            return True if cuda else func(*args)
        if prop == "is_cpu":
            return False if cuda else func(*args)
        result = func(*args)
        self._tag_new(result, self.tag(owner), ())
        return result

    def _move(self, func, name, args, kwargs):
        """``.to`` / ``.cuda`` / ``.cpu``: run on the CPU, tag the result with the target device, and return a
        copy when the tag changes (a tensor on a GPU and its CPU original are different objects)."""
        source, target = args[0], {"cuda": "cuda", "cpu": "cpu"}.get(name)
        if name == "to":
            args = list(args)
            for position, value in enumerate(args[1:], start=1):
                if _is_tensor(value):  # .to(other): other's device (and dtype)
                    target = self.tag(value) or target
                elif _device_kind(value) is not None:
                    target, args[position] = _device_kind(value), _CPU
            if kwargs.get("device") is not None:
                target, kwargs["device"] = _device_kind(kwargs["device"]), _CPU
            if _is_tensor(kwargs.get("other")):
                target = self.tag(kwargs["other"]) or target
            result = func(*args, **kwargs)
        else:
            result = source  # the CPU tensor stands for the tensor on the target device
        if target == "cuda":
            self.checked += 1
        now = self.tag(source)
        if target is None:  # a dtype-only conversion keeps the device
            self._tag_new(result, now, (source,))
            return result
        if target != now and result is source:
            result = source.clone()
        self._tag_new(result, target, (source,) if target == now else ())
        return result

    def _index(self, func, args, kwargs):
        """``x[index]`` / ``index_put_``: index tensors may be on the CPU or on x's device (CUDA's rule); a cuda
        index into a CPU tensor fails, and so does a non-scalar value on another device than x."""
        source = args[0]
        key = args[1] if len(args) > 1 else kwargs.get("indices")
        indices = [t for t in tree_flatten(key)[0] if _is_tensor(t) and t.dim() > 0]
        tag = self.tag(source)
        if tag == "cuda":
            self.checked += 1
        if tag == "cpu" and any(self.tag(t) == "cuda" for t in indices):
            self._fail("a cuda index into a CPU tensor", func, [source] + indices)
        value = args[2] if len(args) > 2 else kwargs.get("values")
        if indices and _is_tensor(value) and value.dim() > 0 and {tag, self.tag(value)} == {"cuda", "cpu"}:
            self._fail("values on another device than the indexed tensor", func, [source, value])
        result = func(*args, **kwargs)
        if tag is None and any(self.tag(t) == "cuda" for t in indices):
            tag = "cuda"
        self._tag_new(result, tag, (source,))
        return result

    def _setitem(self, func, args, kwargs):
        source, key, value = args[0], args[1], args[2]
        if any(_is_tensor(t) for t in tree_flatten(key)[0]):
            return self._index(func, args, kwargs)
        return func(*args, **kwargs)  # basic slicing: a copy, which crosses devices


def _name(func):
    return getattr(func, "__name__", type(func).__name__)


# Calls that never compute on two devices (metadata, printing, autograd's C++ engine, serialisation).
_PASS_THROUGH = frozenset({
    "__repr__", "__str__", "__format__", "_has_compatible_shallow_copy_type", "is_same_size",
    "__reduce_ex__", "__deepcopy__", "__setstate__", "_is_view", "data_ptr", "untyped_storage",
})


@contextlib.contextmanager
def pretend_cuda():
    """``with pretend_cuda() as mode:`` - :class:`PretendCuda` as a plain context manager."""
    mode = PretendCuda()
    with mode:
        yield mode
