"""Name -> class registries, so configs and commands name networks and pipelines by string.

    from medgen.registry import NETWORKS
    @NETWORKS.register()                 # key: the class name in snake_case, "unet_generator"
    class UNetGenerator(nn.Module): ...
    net = NETWORKS.build("unet_generator", spatial_dims=3, in_channels=1, out_channels=1)

Pipelines register under their `name` (`@PIPELINES.register()`), and registration checks the pipeline
contract (`medgen.pipelines.base.check_contract`), so a missing piece fails at import with a clear message.
Both registries find their members by importing every module of their package on first lookup: a new
network or pipeline is a new file, with no list to edit.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re

from medgen.errors import ConfigError


def snake_case(name: str) -> str:
    """'UNetGenerator' -> 'unet_generator', 'WGANResNetCritic' -> 'wgan_res_net_critic'."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


class Registry:
    def __init__(self, kind: str, package: str, check=None):
        self.kind = kind
        self._items: dict[str, object] = {}
        self._package = package  # every module below it is imported on first lookup
        self._check = check
        self._loaded = False
        self.broken: dict[str, str] = {}  # modules that failed to import: {module: error}

    def register(self, name: str | None = None):
        """Register a class under `name` (default: its `name` attribute for pipelines, else its class name
        in snake_case)."""

        def decorator(obj):
            key = name or getattr(obj, "name", None) or snake_case(obj.__name__)
            if key.replace("_", "") != obj.__name__.lower():  # a key a reader can find the class by
                raise ValueError(f"{self.kind} key '{key}' does not match its class name {obj.__name__}")
            if self._check is not None:
                self._check(obj)
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is registered twice ({self._items[key]} and {obj})")
            self._items[key] = obj
            return obj

        return decorator

    def _load(self):
        if self._loaded:
            return
        self._loaded = True
        self.broken = _import_tree(self._package)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str):
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(self._items))}"
            if self.broken:  # the one asked for may be in a module that failed to import: say which and why
                hint += "; modules that failed to import: " + "; ".join(f"{m} ({e})" for m, e in self.broken.items())
            raise ConfigError(f"unknown {self.kind} '{name}'{hint}")
        return self._items[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


def _import_tree(package_name: str) -> dict[str, str]:
    """Import every module and subpackage below a package, leaving out names that start with '_' (the
    `_template` pipeline and private helpers register only when imported on purpose). A module that fails to
    import does not hide the others: its error is returned ({module: error}) and named when a lookup fails."""
    broken: dict[str, str] = {}
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        full = f"{package_name}.{info.name}"
        try:
            if info.ispkg:
                broken.update(_import_tree(full))
            else:
                importlib.import_module(full)
        except Exception as exc:  # noqa: BLE001 - reported by name, with its message
            broken[full] = f"{type(exc).__name__}: {exc}"
    return broken


def _check_pipeline(cls) -> None:
    from medgen.pipelines.base import check_contract

    check_contract(cls)


NETWORKS = Registry("network", "medgen.networks")
PIPELINES = Registry("pipeline", "medgen.pipelines", check=_check_pipeline)
