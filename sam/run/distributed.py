"""Joining a multi-host run (Cloud TPU pods, local CPU processes).

`launch/tpu.py` starts train.py on every worker with
`--config.run.distributed.enabled=True` (and, for local CPU processes, the
coordinator and the process ids); `initialize` must run before anything
else touches the devices.
"""

import jax
import ml_collections

# XLA:CPU aborts the process when a collective's device threads do not all
# arrive within 40 s (rendezvous "Termination timeout"). Fake CPU devices are
# threads of one process: on a loaded host (a laptop, a busy CI machine, many
# runs side by side) one of them can be starved that long without anything
# being wrong. An hour is past any starvation seen, and a real deadlock of
# fake devices is still ended, by the run's own timeout or by this one.
CPU_COLLECTIVE_TIMEOUT_S = 3600
# How long a collective waits before logging that it may be stuck.
CPU_COLLECTIVE_WARN_S = 300


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


def cpu_devices_xla_flags(num_devices: int) -> str:
  """The XLA_FLAGS value for `num_devices` fake CPU devices that do not abort
  on a busy host (for the environment of a process that jax has not started
  in yet: tests, local multi-process runs, benchmarks).

  Args:
    num_devices: devices of the process.

  Returns:
    The flags, space separated.
  """
  return ' '.join(
      [
          f'--xla_force_host_platform_device_count={num_devices}',
          '--xla_cpu_collective_call_terminate_timeout_seconds='
          f'{CPU_COLLECTIVE_TIMEOUT_S}',
          f'--xla_cpu_collective_timeout_seconds={CPU_COLLECTIVE_TIMEOUT_S}',
          '--xla_cpu_collective_call_warn_stuck_timeout_seconds='
          f'{CPU_COLLECTIVE_WARN_S}',
      ]
  )
