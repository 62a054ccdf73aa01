"""Replicas: the paper's parallel semantics on any hardware.

The paper trained CIFAR on 8 accelerators at batch 256: 8 replicas of 32
examples, each with its own BatchNorm statistics and its own SAM
perturbation (m-sharpness with m = 32); ImageNet on 32 TPU cores at batch
4096 (128 per replica). Here a replica is a group of examples, fixed by the
config (`optim.replica_batch_size`), not a device: the step computes the
BatchNorm statistics and the perturbation per replica whether a replica is a
slice of one device's batch or spans several devices. So one config gives
the same training on 1, 2 or 8 devices, up to float rounding.

`sam.m` (Figure 3's m-sharpness) refines the groups of a perturbing method:
groups of m examples, each with its own perturbation and BatchNorm batch.
"""

from typing import NamedTuple

import ml_collections


class Layout(NamedTuple):
  """How a device batch is cut into groups.

  Attributes:
    group_size: examples per group (a replica, or an m-sharpness group).
    groups_per_device: groups in one device batch (1 when a group spans).
    devices_per_group: devices one group spans (1 when groups are slices).
    device_groups: the axis indices of each spanning group, or None.
  """

  group_size: int
  groups_per_device: int
  devices_per_group: int
  device_groups: tuple[tuple[int, ...], ...] | None


def group_size(
    optim: ml_collections.ConfigDict, m: int, device_batch: int
) -> int:
  """Examples per group: m (the method's m-sharpness) if set, else the
  replica batch, else the device batch (one replica per device)."""
  return m or optim.replica_batch_size or device_batch


def layout(
    optim: ml_collections.ConfigDict, m: int, num_devices: int
) -> Layout:
  """The groups of a run on `num_devices` devices (validated by `problem`).

  Args:
    optim: the config's optim section (batch_size, replica_batch_size).
    m: the method's examples per perturbation (`methods.Configured.m`).
    num_devices: the devices over all hosts.

  Returns:
    The Layout.
  """
  device_batch = optim.batch_size // num_devices
  size = group_size(optim, m, device_batch)
  if size <= device_batch:
    return Layout(size, device_batch // size, 1, None)
  span = size // device_batch
  groups = tuple(
      tuple(range(g * span, (g + 1) * span)) for g in range(num_devices // span)
  )
  return Layout(size, 1, span, groups)


def problem(
    optim: ml_collections.ConfigDict,
    m: int,
    sync_perturbation: bool,
    num_devices: int,
) -> str:
  """Why the groups of a run do not fit `num_devices` devices, or ''.

  Args:
    optim: the config's optim section.
    m: the method's examples per perturbation.
    sync_perturbation: the method's one perturbation for the global batch.
    num_devices: the devices over all hosts.

  Returns:
    What the group size must be, or ''.
  """
  device_batch = optim.batch_size // num_devices
  size = group_size(optim, m, device_batch)
  micro = device_batch // optim.accumulation_steps
  if size < device_batch:
    if device_batch % size:
      return f'must divide the per-device batch ({device_batch})'
    if optim.accumulation_steps > 1 and micro % size:
      return (
          f'must divide the micro-batch ({micro}) with '
          'optim.accumulation_steps'
      )
  elif size > device_batch:
    if size % device_batch or num_devices % (size // device_batch):
      return (
          f'spans devices: must be a multiple of the per-device batch '
          f'({device_batch}) that the {num_devices} devices hold a whole '
          'number of times'
      )
  if sync_perturbation and size < device_batch:
    return (
        'must hold at least the per-device batch with '
        'sam.sync_perturbation (one global eps)'
    )
  return ''
