"""JAX's persistent compilation cache, on by default for every run.

A resumed run, and every run of a sweep with the same shapes, then loads
its compiled steps instead of compiling them again (benchmarks/first_step.py
measures the difference). The directory is `config.run.compilation_cache_dir`
('' turns the cache off); a cache JAX already has (JAX_COMPILATION_CACHE_DIR,
as the tests set) is kept.
"""

from etils import epath
import jax


def enable(directory: str) -> str | None:
  """Points JAX's persistent compilation cache at `directory`.

  Must run before the process compiles anything.

  Args:
    directory: a local path ('~' is expanded) or a gs:// URL; '' for none.

  Returns:
    The cache directory in use, or None.
  """
  current = jax.config.jax_compilation_cache_dir
  if current or not directory:
    return current or None
  path = epath.Path(directory).expanduser()
  jax.config.update('jax_compilation_cache_dir', str(path))
  return str(path)
