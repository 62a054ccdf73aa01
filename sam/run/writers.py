"""A run's metric writer: clu's TensorBoard writer plus the JSON-lines file
of sam/run/metrics_file.py.

Files only: the loop logs its own line per write, with the time left
(sam/run/logs.py). clu's LoggingWriter is not among them: its line has no
place for that, and it printed the whole config as one dict line, which
config.json already holds.
"""

from clu import metric_writers
from etils import epath

from sam.run import metrics_file


def create_writer(
    workdir: epath.PathLike,
    is_primary: bool,
    start_step: int = 0,
    tensorboard: bool = True,
) -> metric_writers.MetricWriter:
  """TensorBoard and JSON lines on the primary host; nothing elsewhere.

  Args:
    workdir: the run's workdir.
    is_primary: whether this process writes files (process 0).
    start_step: the step the run starts from; JSON records after it are
      dropped, never records up to it.
    tensorboard: also write TensorBoard event files (through TensorFlow's
      own filesystem, not epath).

  Returns:
    A clu MetricWriter.
  """
  if not is_primary:
    return metric_writers.MultiWriter([])
  primary = [
      metrics_file.JsonLinesWriter(
          epath.Path(workdir) / metrics_file.METRICS_FILE, start_step
      )
  ]
  if tensorboard:
    primary.append(metric_writers.SummaryWriter(str(workdir)))
  return metric_writers.MultiWriter(primary)
