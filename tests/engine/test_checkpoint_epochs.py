"""Which epochs end with a checkpoint and the epoch outputs: ``Recipe.is_checkpoint_epoch``."""

from __future__ import annotations

import pytest

from tests.engine.toy import ToyConfig, ToyRecipe
from tfmedgan.engine import checkpoint as ckpt
from tfmedgan.engine.launch import launch


class FromZeroRecipe(ToyRecipe):
    """Counts checkpoint epochs from 0, as seed 004's ``epoch % checkpoint == 0``."""

    def is_checkpoint_epoch(self, epoch: int) -> bool:
        return epoch % self.config.checkpoint == 0


@pytest.mark.parametrize("recipe_class, epochs", [(ToyRecipe, [1, 3, 4]), (FromZeroRecipe, [0, 2, 4])])
def test_checkpoint_epochs_follow_the_recipe(tmp_path, recipe_class, epochs):
    config = ToyConfig(output_dir=str(tmp_path / "runs"), name="run", epochs=5, checkpoint=2, examples=8,
                       keep_checkpoints=10)
    run_dir, summary = launch(recipe_class(config), progress=False)
    assert summary["steps"] == 10  # 2 steps per epoch
    assert sorted(p.name for p in run_dir.samples.iterdir()) == [f"epoch_{e:04d}.png" for e in epochs]
    # the checkpoints after those epochs (the last epoch always has one)
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run_dir.checkpoints)] == [2 * (e + 1) for e in epochs]
