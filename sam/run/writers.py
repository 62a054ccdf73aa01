"""A run's metric writer: clu's logging and TensorBoard writers plus the
JSON-lines file of sam/run/metrics_file.py."""

from clu import metric_writers
from etils import epath

from sam.run import metrics_file


def create_writer(
    workdir: epath.PathLike,
    is_primary: bool,
    start_step: int = 0,
    tensorboard: bool = True,
) -> metric_writers.MetricWriter:
  """Logging (+ TensorBoard and JSON lines on the primary host).

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
    return metric_writers.LoggingWriter()
  primary = [
      metric_writers.LoggingWriter(),
      metrics_file.JsonLinesWriter(
          epath.Path(workdir) / metrics_file.METRICS_FILE, start_step
      ),
  ]
  if tensorboard:
    primary.append(metric_writers.SummaryWriter(str(workdir)))
  return metric_writers.MultiWriter(primary)
