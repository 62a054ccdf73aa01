"""Hessian eigenvalue density by stochastic Lanczos quadrature.

Ghorbani, Krishnan & Xiao (2019), as used for Figure 3 (left) of the SAM
paper. The Hessian is never materialised: Lanczos only needs Hessian-vector
products, which JAX computes as forward-over-reverse derivatives of the loss.
The parameter pytree is flattened once with `ravel_pytree`, so Lanczos works on
plain vectors whatever the model.

For a unit start vector v, `order` Lanczos steps give a tridiagonal T whose
eigenvalues (Ritz values) and squared first eigenvector components are the
nodes and weights of a Gauss quadrature for the spectral measure
sum_i (v . u_i)^2 delta(x - lambda_i). Averaging over random Gaussian starts
gives the spectral density; Gaussian broadening turns it into a curve. The
largest Ritz values converge first, so they also estimate lambda_max and
lambda_max / lambda_5.

Lanczos here keeps every Lanczos vector (memory order x num_params floats) and
reorthogonalises against all of them twice, which keeps the Ritz values free of
ghost copies in float32.

Run on a checkpoint (writes JSON; `python -m results.spectrum_plot` draws it):
  python -m sam.analysis hessian --workdir=RUN --split=train
"""

from typing import Any, Callable, Iterable, NamedTuple

from etils import epath
import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np

from sam.analysis import inputs
from sam.run import experiment

Array = Any
MatVec = Callable[[Array], Array]


def flat_hvp(
    loss_fn: Callable[[Any], Array], params: Any
) -> tuple[MatVec, int]:
  """Hessian-vector product of `loss_fn` at `params` on flat vectors.

  Args:
    loss_fn: params -> scalar loss.
    params: the pytree at which the Hessian is taken.

  Returns:
    (matvec, dim): matvec maps a float32 vector [dim] to H @ v [dim].
  """
  flat_params, unravel = flatten_util.ravel_pytree(params)

  def flat_grad(flat):
    return flatten_util.ravel_pytree(jax.grad(loss_fn)(unravel(flat)))[0]

  @jax.jit
  def matvec(v):
    v = v.astype(flat_params.dtype)
    return jax.jvp(flat_grad, (flat_params,), (v,))[1]

  return matvec, flat_params.size


def dataset_hvp(
    loss_fn: Callable[[Any, Any], Array], params: Any, batches: Iterable[Any]
) -> tuple[MatVec, int]:
  """Hessian-vector product of the mean loss over several batches.

  The loss of the dataset is the example-weighted mean of the batch losses,
  so its Hessian-vector product is the same mean of the batch products.

  Args:
    loss_fn: (params, batch) -> mean loss over the batch.
    params: the pytree at which the Hessian is taken.
    batches: a re-iterable collection (e.g. a list) of batches; a batch is a
      pytree whose leaves share the leading example dimension. It is iterated
      once per matvec.

  Returns:
    (matvec, dim) as `flat_hvp`.
  """
  flat_params, unravel = flatten_util.ravel_pytree(params)

  def flat_grad(flat, batch):
    grads = jax.grad(loss_fn)(unravel(flat), batch)
    return flatten_util.ravel_pytree(grads)[0]

  @jax.jit
  def batch_matvec(v, batch):
    return jax.jvp(lambda f: flat_grad(f, batch), (flat_params,), (v,))[1]

  def matvec(v):
    v = jnp.asarray(v, flat_params.dtype)
    total, count = jnp.zeros_like(flat_params), 0
    for batch in batches:
      size = jax.tree_util.tree_leaves(batch)[0].shape[0]
      total = total + size * batch_matvec(v, batch)
      count += size
    if count == 0:
      raise ValueError('dataset_hvp: batches is empty')
    return total / count

  return matvec, flat_params.size


@jax.jit
def _orthogonalise(w, basis):
  """Removes from w its components along the rows of basis (zero rows are
  unused slots), twice: one pass loses orthogonality in float32."""
  for _ in range(2):
    w = w - basis.T @ (basis @ w)
  return w


def lanczos(
    matvec: MatVec, v0: Array, order: int, breakdown_tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
  """Lanczos tridiagonalisation with full reorthogonalisation.

  Args:
    matvec: v -> H v for a symmetric H.
    v0: start vector [dim] (normalised here).
    order: number of Lanczos steps m (1 <= m <= dim).
    breakdown_tol: stop early when the new residual norm falls below this
      fraction of ||H v||: the Krylov space is then invariant and exhausted.

  Returns:
    (alphas [k], betas [k - 1]) of the tridiagonal T, k <= order (k < order
    only on breakdown), as float64 numpy arrays.
  """
  dim = v0.shape[0]
  if not 1 <= order <= dim:
    raise ValueError(f'lanczos: order must be in [1, {dim}], got {order}')
  basis = jnp.zeros((order, dim), jnp.float32)
  v = v0 / jnp.linalg.norm(v0)
  alphas, betas = [], []
  for i in range(order):
    basis = basis.at[i].set(v)
    w = matvec(v)
    alpha = jnp.vdot(w, v)
    alphas.append(float(alpha))
    scale = float(jnp.linalg.norm(w))
    w = _orthogonalise(w, basis)
    beta = float(jnp.linalg.norm(w))
    if i == order - 1 or beta <= breakdown_tol * max(scale, 1e-30):
      break
    betas.append(beta)
    v = w / beta
  return np.asarray(alphas, np.float64), np.asarray(betas, np.float64)


def gauss_quadrature(
    alphas: np.ndarray, betas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights of the Gauss quadrature of a Lanczos tridiagonal.

  Returns:
    (nodes, weights): the Ritz values in ascending order and the squared first
    components of their eigenvectors (they sum to 1).
  """
  tridiag = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
  nodes, vectors = np.linalg.eigh(tridiag)
  return nodes, vectors[0] ** 2


class SpectrumEstimate(NamedTuple):
  """Gauss quadratures, one per random start vector."""

  nodes: list[np.ndarray]
  weights: list[np.ndarray]


def stochastic_lanczos_quadrature(
    matvec: MatVec, dim: int, key: Array, order: int = 90, num_draws: int = 3
) -> SpectrumEstimate:
  """Runs Lanczos from `num_draws` Gaussian start vectors.

  Args:
    matvec: v -> H v on float32 vectors [dim].
    dim: number of parameters.
    key: PRNG key for the start vectors.
    order: Lanczos steps per draw (Ghorbani et al. use 90).
    num_draws: number of random start vectors.

  Returns:
    A SpectrumEstimate with `num_draws` quadratures.
  """
  if num_draws < 1:
    raise ValueError(f'num_draws must be >= 1, got {num_draws}')
  nodes, weights = [], []
  for draw_key in jax.random.split(key, num_draws):
    v0 = jax.random.normal(draw_key, (dim,), jnp.float32)
    quad = gauss_quadrature(*lanczos(matvec, v0, order))
    nodes.append(quad[0])
    weights.append(quad[1])
  return SpectrumEstimate(nodes, weights)


def top_eigenvalues(estimate: SpectrumEstimate, k: int = 5) -> np.ndarray:
  """Estimates the k largest eigenvalues, in descending order.

  By Cauchy interlacing the j-th largest Ritz value of any draw is at most the
  j-th largest eigenvalue, so the elementwise maximum over draws is the
  tightest of these lower bounds. NaN where no draw has j Ritz values.
  """
  tops = np.full((len(estimate.nodes), k), -np.inf)
  for row, nodes in zip(tops, estimate.nodes):
    best = np.sort(nodes)[::-1][:k]
    row[: best.size] = best
  tops = tops.max(axis=0)
  return np.where(np.isfinite(tops), tops, np.nan)


def density_grid(
    estimate: SpectrumEstimate,
    num_points: int = 1000,
    sigma: float | None = None,
    relative_sigma: float = 0.01,
) -> tuple[np.ndarray, float]:
  """An evaluation grid that covers every node with 5 sigma to spare.

  Args:
    estimate: the quadratures.
    num_points: grid size.
    sigma: broadening width; None: relative_sigma times the node range.
    relative_sigma: see sigma.

  Returns:
    (grid [num_points], sigma).
  """
  low = min(float(n.min()) for n in estimate.nodes)
  high = max(float(n.max()) for n in estimate.nodes)
  if sigma is None:
    sigma = relative_sigma * max(high - low, 1e-12 + 1e-6 * abs(high))
  if sigma <= 0:
    raise ValueError(f'sigma must be > 0, got {sigma}')
  return np.linspace(low - 5 * sigma, high + 5 * sigma, num_points), sigma


def spectral_density(
    estimate: SpectrumEstimate, grid: np.ndarray, sigma: float
) -> np.ndarray:
  """Gaussian-broadened eigenvalue density averaged over the draws.

  Args:
    estimate: the quadratures.
    grid: points at which to evaluate the density.
    sigma: standard deviation of the Gaussian placed on each node.

  Returns:
    The density on `grid`; it integrates to 1 when the grid covers the nodes.
  """
  density = np.zeros_like(grid, dtype=np.float64)
  for nodes, weights in zip(estimate.nodes, estimate.weights):
    gauss = np.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / sigma) ** 2)
    density += gauss @ weights / (sigma * np.sqrt(2 * np.pi))
  return density / len(estimate.nodes)


def spectrum_summary(estimate: SpectrumEstimate, num_top: int = 5) -> dict:
  """lambda_max, lambda_max / lambda_5, the top eigenvalues and the mean.

  Returns:
    A JSON-ready dict. `mean_eigenvalue` is the quadrature estimate of
    trace(H) / dim (the mean over draws of v^T H v for unit v).
  """
  tops = top_eigenvalues(estimate, max(num_top, 5))
  mean = np.mean(
      [np.dot(n, w) for n, w in zip(estimate.nodes, estimate.weights)]
  )
  return {
      'lambda_max': float(tops[0]),
      'lambda_5': float(tops[4]),
      'lambda_max_over_lambda_5': float(tops[0] / tops[4]),
      'top_eigenvalues': [float(t) for t in tops[:num_top]],
      'mean_eigenvalue': float(mean),
      'lambda_min': float(min(n.min() for n in estimate.nodes)),
  }


def estimate_to_json(estimate: SpectrumEstimate) -> dict:
  """The raw quadratures as lists, for the JSON output."""
  return {
      'nodes': [n.tolist() for n in estimate.nodes],
      'weights': [w.tolist() for w in estimate.weights],
  }


def estimate_from_json(record: dict) -> SpectrumEstimate:
  """Inverse of `estimate_to_json`."""
  return SpectrumEstimate(
      [np.asarray(n) for n in record['nodes']],
      [np.asarray(w) for w in record['weights']],
  )


def analyse(
    run: experiment.LoadedRun,
    output_dir: epath.PathLike,
    *,
    split: str = 'train',
    num_examples: int = 1024,
    batch_size: int = 128,
    bn_mode: str = 'train',
    weight_decay: bool = False,
    order: int = 90,
    num_draws: int = 3,
    seed: int = 0,
) -> dict:
  """Hessian spectrum of a trained model; writes JSON.

  Args:
    run: the run, from `sam.run.experiment.load_run`.
    output_dir: where `hessian_<split>_<bn_mode>.json` goes.
    split: 'train', 'test' or 'validation'.
    num_examples: examples whose mean loss is differentiated (0: the split).
    batch_size: examples per Hessian-vector product (and per BatchNorm batch
      in 'train' mode); the remainder of num_examples is dropped.
    bn_mode: 'train' or 'eval' (sam/analysis/inputs.py).
    weight_decay: include the run's 0.5 * wd * ||w||^2 (adds wd to every
      eigenvalue); default: the data loss alone.
    order, num_draws, seed: Lanczos steps, start vectors and their seed.

  Returns:
    The JSON record.
  """
  loss = inputs.run_loss(
      run,
      split=split,
      num_examples=num_examples,
      batch_size=batch_size,
      bn_mode=bn_mode,
      seed=seed,
      weight_decay=weight_decay,
  )
  matvec, dim = dataset_hvp(loss.batch_loss, loss.params, loss.batches())
  estimate = stochastic_lanczos_quadrature(
      matvec, dim, jax.random.key(seed), min(order, dim), num_draws
  )
  grid, sigma = density_grid(estimate)
  density = spectral_density(estimate, grid, sigma)
  record = {
      'method': loss.method,
      'split': split,
      'bn_mode': bn_mode,
      'weight_decay': weight_decay,
      'num_examples': loss.num_examples,
      'num_params': dim,
      'order': order,
      'num_draws': num_draws,
      'summary': spectrum_summary(estimate),
      'density': {
          'grid': grid.tolist(),
          'sigma': sigma,
          'values': density.tolist(),
      },
      'quadrature': estimate_to_json(estimate),
  }
  inputs.write_record(output_dir, f'hessian_{split}_{bn_mode}.json', record)
  return record
