"""GAN recipes (networks + optimizers + one train step each) and the registry of models by name."""

from __future__ import annotations

import importlib
from typing import Any

from tfmedgan.errors import TfmedganError

#: model name -> (config class, recipe class), as "module:attribute" so imports stay lazy.
REGISTRY: dict[str, tuple[str, str]] = {
    "dcgan": ("tfmedgan.config:DCGANConfig", "tfmedgan.models.dcgan:DCGANRecipe"),
    "stylegan2": ("tfmedgan.config:StyleGAN2Config", "tfmedgan.models.stylegan2:StyleGAN2Recipe"),
    "cyclegan3d": ("tfmedgan.config:CycleGAN3DConfig", "tfmedgan.models.cyclegan:CycleGAN3DRecipe"),
    "cyclegan-sr": ("tfmedgan.config:CycleGANSRConfig", "tfmedgan.models.cyclegan_sr:CycleGANSRRecipe"),
}


def _load(target: str):
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def recipe_from_config(values: dict[str, Any]):
    """Rebuild the recipe of a run from its stored config.json contents."""
    from tfmedgan.config import config_from_dict

    name = values.get("model")
    if name not in REGISTRY:
        raise TfmedganError(f"unknown model {name!r} in config (known: {', '.join(sorted(REGISTRY))})")
    config_cls, recipe_cls = (_load(t) for t in REGISTRY[name])
    return recipe_cls(config_from_dict(config_cls, values))
