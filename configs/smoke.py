"""The smallest real run: seconds on a CPU, shared by tests and benchmarks.

  python train.py --config=configs/smoke.py --workdir=/tmp/smoke

A mini WRN (depth 10, width 1) on the offline digits for one epoch (23 steps
of batch 64), checkpointing every 4 steps and logging every 5. Not a paper
setting: it exercises every piece of a run (data, step, eval, checkpoints,
metrics, summary) in about as little time as they take. Knobs: those of
configs/quickstart.py (opt, rho, epochs_x, validation, seed, model, epochs,
noise), with model [wrn_mini], epochs [1] and noise [0: clean labels].
"""

from configs import knobs
from configs import quickstart

KNOBS = {
    **quickstart.KNOBS,
    'model': knobs.Knob(str, 'wrn_mini'),
    'epochs': knobs.Knob(int, 1),
    'noise': knobs.Knob(float, 0.0),
}


def get_config(arg: str | None = None):
  c = quickstart.from_knobs(knobs.parse(arg, KNOBS, 'configs/smoke.py'))
  c.run.checkpoint_every_steps = 4
  c.run.log_every_steps = 5
  return c
