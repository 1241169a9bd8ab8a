"""Loaders for user models declared in the manifest, one per ``kind``, and the checks every loaded
model passes before it becomes a :class:`~model_registry.base.ModelHandle`.

Loading is safe by default: ``state_dict`` files are read with ``torch.load(weights_only=True)``. A
file that needs arbitrary Python objects to unpickle (a pickled ``nn.Module``, or worse) is refused
without running any of its code unless the entry says ``trust = true``. Whether such a file needs code
is decided by reading its pickle opcodes (``pickletools``), never by unpickling it.
"""
from __future__ import annotations

import functools
import importlib
import io
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from manifest import ModelEntry
from model_registry.base import (
    InputNormalized,
    ModelError,
    ModelHandle,
    find_normalizer_mean,
    last_conv_layer,
    pick_device,
    weights_hash,
)

# Opcodes that make the unpickler import a global (and so, possibly, run code).
_GLOBAL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})
_STRING_OPCODES = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
# Globals a legacy (non-zip) torch.save file of plain tensors uses; anything else needs trust.
_TENSOR_GLOBALS = re.compile(
    r"torch\.(\w+Storage|_utils\._rebuild_\w+|_tensor\._rebuild_\w+|Size|\w*Tensor)|collections\.OrderedDict"
    r"|(__builtin__|builtins)\.set"
)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _pickle_globals(data: bytes) -> list[str]:
    """Globals referenced by the pickle stream(s) in ``data``, read with ``pickletools.genops``
    (which parses opcodes and executes nothing). Stops quietly at the first unparsable byte."""
    found: list[str] = []
    stream = io.BytesIO(data)
    strings: list[str] = []
    while stream.tell() < len(data):
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in _STRING_OPCODES:
                    strings.append(str(arg))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]))
                elif op.name in _GLOBAL_OPCODES:
                    found.append(str(arg).replace(" ", "."))
        except ValueError:  # not (or no longer) a pickle: torch storage bytes or garbage
            break
    return found


def _unsafe_globals(path: Path) -> list[str]:
    """Globals that ``torch.load(weights_only=True)`` refuses, for a torch.save zip (torch's own static
    check) or a legacy/raw pickle (our opcode scan, minus the tensor-rebuilding globals)."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except (ValueError, RuntimeError, KeyError, zipfile.BadZipFile):
            return []
    return [name for name in _pickle_globals(path.read_bytes()) if not _TENSOR_GLOBALS.fullmatch(name)]


def _torch_load(entry: ModelEntry, device: torch.device) -> Any:
    """``torch.load`` of the entry's file: weights only, unless the entry trusts the file."""
    if entry.trust:
        try:
            return torch.load(entry.path, map_location=device, weights_only=False)
        except Exception as err:  # a trusted pickle may raise anything
            raise ModelError(f"model {entry.id!r}: cannot load {str(entry.path)!r}: {_first_line(err)}") from err
    try:
        return torch.load(entry.path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        unsafe = _unsafe_globals(entry.path)
        if unsafe:
            raise ModelError(
                f"model {entry.id!r}: {str(entry.path)!r} contains pickled Python objects ({', '.join(unsafe[:5])}); "
                "loading it can run code; set trust = true in the manifest entry if you trust this file"
            ) from None
        raise ModelError(
            f"model {entry.id!r}: {str(entry.path)!r} is not a readable torch.save file (corrupt or wrong kind?): "
            f"{_first_line(err)}"
        ) from None


def _build(entry: ModelEntry) -> nn.Module:
    """Import ``package.module:callable`` and call it with ``factory_kwargs``."""
    if entry.factory is None:
        raise ModelError(
            f"model {entry.id!r}: {str(entry.path)!r} holds a state dict; set factory = 'package.module:callable' "
            "to build the module it belongs to"
        )
    module_name, attr = entry.factory.split(":")
    try:
        target: Any = functools.reduce(getattr, attr.split("."), importlib.import_module(module_name))
    except (ImportError, AttributeError) as err:
        raise ModelError(f"model {entry.id!r}: cannot import factory {entry.factory!r}: {err}") from err
    try:
        module = target(**entry.factory_kwargs)
    except Exception as err:  # user code
        raise ModelError(f"model {entry.id!r}: factory {entry.factory!r} failed: {_first_line(err)}") from err
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"model {entry.id!r}: factory {entry.factory!r} returned {type(module).__name__}, not an nn.Module"
        )
    return module


def _load_state_dict(entry: ModelEntry, device: torch.device) -> nn.Module:
    """state_dict: build the module with the factory and load the weights with ``strict=True``. With
    ``trust = true`` the file may instead hold a whole pickled ``nn.Module``."""
    obj = _torch_load(entry, device)
    if isinstance(obj, nn.Module):
        return obj.to(device)
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelError(
            f"model {entry.id!r}: {str(entry.path)!r} holds a {type(obj).__name__}, not a state dict (name -> tensor)"
        )
    module = _build(entry)
    try:
        module.load_state_dict(obj, strict=True)
    except RuntimeError as err:
        raise ModelError(
            f"model {entry.id!r}: the weights in {str(entry.path)!r} do not fit the module built by "
            f"{entry.factory!r}: {err}"
        ) from err
    return module.to(device)


def _load_torchscript(entry: ModelEntry, device: torch.device) -> nn.Module:
    """torchscript: ``torch.jit.load`` (a TorchScript archive, saved with ``torch.jit.save``)."""
    try:
        return torch.jit.load(str(entry.path), map_location=device)
    except Exception as err:  # noqa: BLE001 - jit raises RuntimeError/ValueError for bad archives
        raise ModelError(
            f"model {entry.id!r}: {str(entry.path)!r} is not a readable TorchScript archive "
            f"(save it with torch.jit.save): {_first_line(err)}"
        ) from None


def _load_exported(entry: ModelEntry, device: torch.device) -> nn.Module:
    """exported: ``torch.export.load`` then ``torch.export.unflatten``, which (unlike ``.module()``)
    restores the submodule hierarchy, so forward hooks on named layers fire (Grad-CAM, pathways)."""
    try:
        with open(entry.path, "rb") as handle:
            program = torch.export.load(handle)
        module = torch.export.unflatten(program)
    except Exception as err:  # noqa: BLE001 - torch.export raises RuntimeError and others for bad archives
        raise ModelError(
            f"model {entry.id!r}: {str(entry.path)!r} is not a readable exported program "
            f"(save it with torch.export.save): {_first_line(err)}"
        ) from None
    return module.to(device)


def _load_sklearn(entry: ModelEntry, device: torch.device) -> nn.Module:
    """sklearn: a fitted estimator with predict_proba (model_registry.blackbox)."""
    from model_registry.blackbox import load_sklearn

    return load_sklearn(entry, device)


MODEL_LOADERS: dict[str, Callable[[ModelEntry, torch.device], nn.Module]] = {
    "torchscript": _load_torchscript,
    "state_dict": _load_state_dict,
    "exported": _load_exported,
    "sklearn": _load_sklearn,
}


def _dummy_input(entry: ModelEntry, device: torch.device) -> torch.Tensor:
    """A seeded batch of 2 inputs inside ``value_range``."""
    low, high = entry.value_range
    gen = torch.Generator().manual_seed(0)
    return (low + (high - low) * torch.rand(2, *entry.input_shape, generator=gen)).to(device)


def entry_classes(entry: ModelEntry) -> list[str]:
    """The entry's class names; without a ``classes`` list, ImageNet-1k's 1000 (``data.classes``)."""
    from data.classes import imagenet_names

    return list(entry.classes) if entry.classes is not None else list(imagenet_names())


def _hookable(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named submodules that take forward hooks: not TorchScript ones, not the normaliser Loupe adds."""
    skip = {"normalize"} if isinstance(module, InputNormalized) else set()
    return [(name, sub) for name, sub in module.named_modules()
            if name and name not in skip and not isinstance(sub, torch.jit.ScriptModule)]


def probe(entry: ModelEntry, module: nn.Module, device: torch.device) -> list[str]:
    """Run one forward pass on a dummy batch; check that the model accepts ``input_shape`` and
    returns one logit per class. Returns the named submodules whose forward hooks fired, in call
    order (empty for TorchScript, which does not support hooks)."""
    called: list[str] = []
    hooks = []
    if not isinstance(module, torch.jit.ScriptModule):
        for name, sub in _hookable(module):
            hooks.append(sub.register_forward_hook(lambda m, i, o, name=name: called.append(name)))
    x = _dummy_input(entry, device)
    try:
        with torch.inference_mode():
            out = module(x)
    except Exception as err:  # noqa: BLE001 - any failure here means the declared input does not fit
        raise ModelError(
            f"model {entry.id!r} does not accept input of shape {list(x.shape)} "
            f"(batch of 2 x input_shape {list(entry.input_shape)}): {_first_line(err)}"
        ) from None
    finally:
        for hook in hooks:
            hook.remove()
    if not torch.is_tensor(out):
        raise ModelError(f"model {entry.id!r} returns {type(out).__name__}; expected a tensor of logits")
    n_classes = len(entry_classes(entry))
    if out.shape != (2, n_classes):
        listed = (f"the entry lists {n_classes} classes" if entry.classes is not None else
                  "the entry has no classes list, so ImageNet-1k's 1000 classes are assumed (list classes = [...])")
        raise ModelError(
            f"model {entry.id!r} outputs shape {list(out.shape)} for a batch of 2, but {listed} "
            f"(expected [2, {n_classes}])"
        )
    return list(dict.fromkeys(called))


def _pick_layer(entry: ModelEntry, name: str, called: list[str], prefix: str = "") -> str:
    if not called:
        raise ModelError(
            f"model {entry.id!r}: layer {name!r} cannot be hooked: {entry.kind} models expose no hookable layers"
        )
    for candidate in (name, prefix + name):
        if candidate in called:
            return candidate
    raise ModelError(f"model {entry.id!r}: layer {name!r} is not a layer the model calls; layers: {called}")


def _layers(entry: ModelEntry, module: nn.Module, called: list[str]) -> tuple[str | None, list[str]]:
    """Grad-CAM layer and pathway layers: the entry's (validated; named as in the checkpoint or as
    in the handle) or, by default, the last Conv2d and all called Conv2d layers."""
    prefix = InputNormalized.PREFIX if isinstance(module, InputNormalized) else ""
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n in called]
    default_cam = last_conv_layer(module)
    gradcam = (
        _pick_layer(entry, entry.gradcam_layer, called, prefix)
        if entry.gradcam_layer
        else (default_cam if default_cam in called else None)
    )
    layers = [_pick_layer(entry, n, called, prefix) for n in entry.layers] if entry.layers else convs
    return gradcam, layers


def load_model(entry: ModelEntry, device: torch.device | str | None = None) -> ModelHandle:
    """Load, validate and wrap a manifest model on ``device`` (default: cuda if present, else CPU).

    Raises ModelError naming the entry for unreadable or refused files, a wrong input shape, or an
    output size that differs from the number of classes.
    """
    dev = torch.device(device) if device is not None else pick_device()
    module = MODEL_LOADERS[entry.kind](entry, dev).eval()
    if entry.mean is not None and entry.std is not None:
        module = InputNormalized(module, entry.mean, entry.std, image=entry.task == "image").to(dev).eval()
    called = probe(entry, module, dev)
    gradcam, layers = _layers(entry, module, called)
    mean = list(entry.normalize_mean) if entry.normalize_mean is not None else find_normalizer_mean(module)
    return ModelHandle(
        id=entry.id,
        module=module,
        task=entry.task,  # type: ignore[arg-type]  # validated against TASKS by the manifest
        input_shape=tuple(entry.input_shape),
        classes=entry_classes(entry),
        value_range=entry.value_range,
        normalizer_mean=mean,
        layers=layers,
        gradcam_layer=gradcam,
        dataset=entry.dataset,
        weights_hash=weights_hash(module),
        hookable=bool(called),
        source="manifest",
        meta={"kind": entry.kind, "path": str(entry.path), "description": entry.description},
    )
