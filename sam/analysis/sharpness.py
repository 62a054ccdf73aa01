"""Sharpness and m-sharpness of a trained run (Table 12, Figure 7, Section
4.1): the estimators of sam/sharpness.py on fixed batches of a checkpoint.

  python -m sam.analysis sharpness --workdir=RUN --split=train --rho=0.05
"""

import json
from typing import Any, Sequence

import jax
import numpy as np
from etils import epath

from sam import sharpness
from sam.analysis import inputs


def analyse(run: tuple[Any, Any, Any, Any], output_dir: epath.PathLike, *,
            rho: float = 0.05, num_steps: Sequence[int] = (1, 2, 5),
            m_values: Sequence[int] = (), split: str = 'train',
            num_examples: int = 1024, batch_size: int = 128,
            bn_mode: str = 'train', seed: int = 0) -> dict:
  """Sharpness and m-sharpness of a trained model; writes JSON.

  Args:
    run: (config, model, variables, datasets), as
      `sam.run.experiment.load_run`.
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
  config, model, variables, datasets = run
  batch_loss = inputs.make_batch_loss(
      model, variables['batch_stats'], bn_mode,
      label_smoothing=config.optim.label_smoothing)
  batches = inputs.unstack_batches(inputs.stack_batches(
      *inputs.split_examples(datasets, split, num_examples, seed),
      batch_size))
  params = variables['params']

  def batch_mean(fn, *args):
    values = [fn(params, batch, *args) for batch in batches]
    return jax.tree.map(lambda *v: float(np.mean(v)), *values)

  # k is traced, so every k shares one compilation.
  probe = jax.jit(lambda p, b, k: sharpness.sharpness(
      lambda q: batch_loss(q, b), p, rho, k)[:2])
  results = {k: batch_mean(probe, k) for k in num_steps}
  record = {
      'method': config.sam.method, 'split': split, 'bn_mode': bn_mode,
      'rho': rho, 'batch_size': batch_size,
      'num_examples': len(batches) * batch_size,
      'loss': results[num_steps[0]][1],
      'sharpness': {str(k): value for k, (value, _) in results.items()},
      'm_sharpness': {},
  }
  for m in m_values:
    record['m_sharpness'][str(m)] = batch_mean(jax.jit(
        lambda p, b, m=m: sharpness.m_sharpness(batch_loss, p, b, m, rho,
                                                max(num_steps))))
  output_dir = epath.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / f'sharpness_{split}_rho{rho:g}.json').write_text(
      json.dumps(record, indent=1))
  return record
