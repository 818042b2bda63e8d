"""Explicit name -> class registries, so configs can name networks and pipelines by string.

    from medgen.registry import NETWORKS
    @NETWORKS.register("unet")
    class UNetGenerator(nn.Module): ...
    net = NETWORKS.build("unet", spatial_dims=3, in_channels=1, out_channels=1)
"""

from __future__ import annotations

import difflib
import importlib

from medgen.errors import ConfigError


class Registry:
    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, object] = {}
        self._modules = modules  # imported on first lookup so registration happens lazily
        self._loaded = False

    def register(self, name: str):
        def decorator(obj):
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def _load(self):
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str):
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(self._items))}"
            raise ConfigError(f"unknown {self.kind} '{name}'{hint}")
        return self._items[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items


NETWORKS = Registry("network", ("medgen.networks",))
# One module per pipeline; importing it registers the pipeline.
PIPELINES = Registry(
    "pipeline",
    (
        "medgen.pipelines.toy",
        "medgen.pipelines.mr_to_ct",
        "medgen.pipelines.expression_vae",
        "medgen.pipelines.mr_synthesis",
        "medgen.pipelines.pet_lowdose",
        "medgen.pipelines.lesion_uda",
        "medgen.pipelines.oct_anogan",
    ),
)
