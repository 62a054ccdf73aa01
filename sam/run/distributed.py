"""Joining a multi-host run (Cloud TPU pods, local CPU processes).

`launch/tpu.py` starts train.py on every worker with
`--config.run.distributed.enabled=True` (and, for local CPU processes, the
coordinator and the process ids); `initialize` must run before anything
else touches the devices.
"""

import jax
import ml_collections


def initialize(config: ml_collections.ConfigDict) -> bool:
  """Joins the multi-host run that `config` (run.distributed) describes.

  On a TPU pod jax.distributed finds the coordinator and the process ids by
  itself; local processes name them.

  Args:
    config: the run.distributed section.

  Returns:
    Whether jax.distributed was initialised.
  """
  if not config.enabled:
    return False
  jax.distributed.initialize(
      coordinator_address=config.coordinator_address or None,
      num_processes=config.num_processes or None,
      process_id=config.process_id if config.process_id >= 0 else None,
  )
  return True
