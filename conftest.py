"""Test setup: two fake CPU devices, so pmap, per-device SAM perturbations and
device batching run for real in every test."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
