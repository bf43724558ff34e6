"""The models of tfmedgan, one module (or small package) each, and the registry: the only list of
models. The command line, the Python API, ``--resume`` and ``generate_images/generate.py`` find a
model here by the name stored in a run's ``config.json``.

To add a model: write its module with a ``MODEL = ModelSpec(...)`` (see
:mod:`tfmedgan.models.spec` and ``docs/architecture.md``), then add one line below.
"""

from __future__ import annotations

import importlib

from tfmedgan.errors import TfmedganError

#: model name -> the module that defines its ``MODEL`` spec (imported when first needed).
REGISTRY: dict[str, str] = {
    "dcgan": "tfmedgan.models.dcgan",
    "stylegan2": "tfmedgan.models.stylegan2",
    "cyclegan3d": "tfmedgan.models.cyclegan3d",
    "cyclegan-sr": "tfmedgan.models.cyclegan_sr",
    "pix2pix3d": "tfmedgan.models.pix2pix_uda.pix2pix3d",
    "vae2d": "tfmedgan.models.pix2pix_uda.vae2d",
    "uda": "tfmedgan.models.pix2pix_uda.uda",
}


def get_model(name: str):
    """The :class:`~tfmedgan.models.spec.ModelSpec` of a registered model."""
    if name not in REGISTRY:
        raise TfmedganError(f"unknown model {name!r} (known: {', '.join(REGISTRY)})")
    return importlib.import_module(REGISTRY[name]).MODEL


def all_models() -> list:
    """Every registered model's spec, in registry order."""
    return [get_model(name) for name in REGISTRY]


def recipe_from_config(values: dict):
    """Rebuild the (unbuilt) recipe of a run from its stored ``config.json`` contents."""
    spec = get_model(values.get("model", ""))
    return spec.build_recipe(spec.config_from_dict(values))
