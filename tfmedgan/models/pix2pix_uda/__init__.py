"""Seed 001 (WinstonHuTiger/2D_VAE_UDA_for_3D_sythesis): 3D pix2pix T2 + FLAIR -> T1 with the SIT
generator, and its unsupervised domain adaptation with a 2D slice VAE. Three registered models,
run in this order:

1. ``pix2pix3d`` (:mod:`.pix2pix3d`): supervised pretraining on the source domain;
   ``pix2pix3d-test`` scores a run on a test split and writes synthetic T1 volumes on the
   original grids;
2. ``vae2d`` (:mod:`.vae2d`): the slice VAE on the source domain's T1 volumes;
3. ``uda`` (:mod:`.uda`): adaptation of the pretrained pix2pix to the target domain with the
   VAE's KL term.

Shared parts (losses, KL, scoring, sample data, memory estimate) are in :mod:`.common`;
:func:`translate_cases` writes synthetic T1 volumes of a pix2pix3d or uda run (the
``generate_images/generate.py`` path). See ``docs/pix2pix_uda.md``.
"""

from tfmedgan.models.pix2pix_uda.common import score_run, translate_cases

__all__ = ["score_run", "translate_cases"]
