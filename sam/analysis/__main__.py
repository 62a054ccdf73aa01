r"""The analyses on a finished run's checkpoint, from the command line.

  python -m sam.analysis hessian --workdir=RUN [--split=train --bn_mode=train]
  python -m sam.analysis sharpness --workdir=RUN --rho=0.05 --num_steps=1,2,5 \
      --m=4,32,128
  python -m sam.analysis landscape --workdir=RUN --dims=2 [--bn_mode=eval]

Each writes one JSON record to --output_dir (default RUN/analysis) and prints
its summary; `python -m results.spectrum_plot` and `python -m
results.landscape` draw them. Defaults follow the tool: 1024 training
examples with batch BatchNorm statistics for hessian and sharpness, 512 with
running statistics for landscape.
"""

import json

from absl import app
from absl import flags
from etils import epath

from sam.analysis import hessian
from sam.analysis import inputs
from sam.analysis import landscape
from sam.analysis import sharpness
from sam.run import experiment

TOOLS = ('hessian', 'sharpness', 'landscape')
# Tool -> (examples, BatchNorm mode) when the flags leave them unset.
DEFAULTS = {
    'hessian': (1024, 'train'),
    'sharpness': (1024, 'train'),
    'landscape': (512, 'eval'),
}


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir.', required=True)
  flags.DEFINE_string('output_dir', None, 'Default: WORKDIR/analysis.')
  flags.DEFINE_string('split', 'train', 'train, test or validation.')
  flags.DEFINE_integer(
      'num_examples', None, 'Examples in the loss; 0: all. Default: the tool.'
  )
  flags.DEFINE_integer('batch_size', 128, 'Examples per batch.')
  flags.DEFINE_enum(
      'bn_mode',
      None,
      list(inputs.BN_MODES),
      'BatchNorm statistics: train (batch) or eval (running). '
      'Default: the tool.',
  )
  flags.DEFINE_integer(
      'seed',
      0,
      'Seed of the examples and of any random ' 'directions or start vectors.',
  )
  flags.DEFINE_bool('weight_decay', False, 'hessian: include the L2 term.')
  flags.DEFINE_integer('order', 90, 'hessian: Lanczos steps per vector.')
  flags.DEFINE_integer('num_draws', 3, 'hessian: random start vectors.')
  flags.DEFINE_float('rho', 0.05, 'sharpness: radius of the ball.')
  flags.DEFINE_list('num_steps', ['1', '2', '5'], 'sharpness: ascent steps.')
  flags.DEFINE_list(
      'm', [], 'sharpness: m-sharpness subset sizes (divide ' 'batch_size).'
  )
  flags.DEFINE_integer('dims', 1, 'landscape: 1 or 2 directions.')
  flags.DEFINE_float('extent', 1.0, 'landscape: grid half-width.')
  flags.DEFINE_integer('num_points', 21, 'landscape: points per direction.')


def run_tool(tool: str, workdir: str) -> dict:
  """Runs `tool` on the run in `workdir` with the flags' settings.

  Args:
    tool: one of TOOLS.
    workdir: a finished run's workdir.

  Returns:
    The printed part of the tool's JSON record.
  """
  f = flags.FLAGS
  num_examples, bn_mode = DEFAULTS[tool]
  examples = dict(
      split=f.split,
      batch_size=f.batch_size,
      seed=f.seed,
      num_examples=(num_examples if f.num_examples is None else f.num_examples),
      bn_mode=f.bn_mode or bn_mode,
  )
  run = experiment.load_run(workdir)
  output_dir = f.output_dir or epath.Path(workdir) / 'analysis'
  if tool == 'hessian':
    record = hessian.analyse(
        run,
        output_dir,
        weight_decay=f.weight_decay,
        order=f.order,
        num_draws=f.num_draws,
        **examples,
    )
    return record['summary']
  if tool == 'sharpness':
    record = sharpness.analyse(
        run,
        output_dir,
        rho=f.rho,
        num_steps=[int(k) for k in f.num_steps],
        m_values=[int(m) for m in f.m],
        **examples,
    )
    return {k: record[k] for k in ('loss', 'sharpness', 'm_sharpness')}
  record = landscape.analyse(
      run,
      output_dir,
      dims=f.dims,
      extent=f.extent,
      num_points=f.num_points,
      **examples,
  )
  return {
      'center_loss': record['center_loss'],
      'max_loss': max(map(max, record['loss']))
      if f.dims == 2
      else max(record['loss']),
  }


def main(argv):
  if len(argv) != 2 or argv[1] not in TOOLS:
    raise app.UsageError(
        f'give one tool: python -m sam.analysis '
        f'{{{",".join(TOOLS)}}} --workdir=RUN'
    )
  print(json.dumps(run_tool(argv[1], flags.FLAGS.workdir), indent=1))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
