"""Sharpness and m-sharpness of a trained run (Table 12, Figure 7, Section
4.1): the estimators of sam/sharpness.py on fixed batches of a checkpoint.

  python -m sam.analysis sharpness --workdir=RUN --split=train --rho=0.05
"""

from typing import Sequence

from etils import epath
import jax
import numpy as np

from sam import sharpness
from sam.analysis import inputs
from sam.run import experiment


def analyse(
    run: experiment.LoadedRun,
    output_dir: epath.PathLike,
    *,
    rho: float = 0.05,
    num_steps: Sequence[int] = (1, 2, 5),
    m_values: Sequence[int] = (),
    split: str = 'train',
    num_examples: int = 1024,
    batch_size: int = 128,
    bn_mode: str = 'train',
    seed: int = 0,
) -> dict:
  """Sharpness and m-sharpness of a trained model; writes JSON.

  Args:
    run: the run, from `sam.run.experiment.load_run`.
    output_dir: where `sharpness_<split>_rho<rho>.json` goes.
    rho: radius of the ball.
    num_steps: ascent step counts k to report.
    m_values: subset sizes of the m-sharpness to report (each must divide
      batch_size); m-sharpness uses the largest k of num_steps.
    split, num_examples, batch_size, bn_mode: the batches (see
      sam/analysis/inputs.py); the probe runs per batch and is averaged.
    seed: seed of the example subset.

  Returns:
    The JSON record.
  """
  loss = inputs.run_loss(
      run,
      split=split,
      num_examples=num_examples,
      batch_size=batch_size,
      bn_mode=bn_mode,
      seed=seed,
  )
  batches = loss.batches()

  def batch_mean(fn, *args):
    values = [fn(loss.params, batch, *args) for batch in batches]
    return jax.tree.map(lambda *v: float(np.mean(v)), *values)

  def probe(params, batch, k):  # k is traced: every k shares a compilation.
    return sharpness.sharpness(
        lambda p: loss.batch_loss(p, batch), params, rho, k
    )[:2]

  probe = jax.jit(probe)
  results = {k: batch_mean(probe, k) for k in num_steps}
  m_probe = jax.jit(
      lambda p, b, m: sharpness.m_sharpness(
          loss.batch_loss, p, b, m, rho, max(num_steps)
      ),
      static_argnums=2,
  )
  record = {
      'method': loss.method,
      'split': split,
      'bn_mode': bn_mode,
      'rho': rho,
      'batch_size': batch_size,
      'num_examples': loss.num_examples,
      'loss': results[num_steps[0]][1],
      'sharpness': {str(k): value for k, (value, _) in results.items()},
      'm_sharpness': {str(m): batch_mean(m_probe, m) for m in m_values},
  }
  inputs.write_record(output_dir, f'sharpness_{split}_rho{rho:g}.json', record)
  return record
