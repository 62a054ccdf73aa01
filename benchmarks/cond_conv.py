"""A convolution's gradient inside `lax.cond` runs far slower on XLA:CPU.

A self-contained repro (jax, numpy and absl only). One 2-D convolution (NHWC
input, HWIO kernel, SAME padding) is timed as its forward pass, kernel gradient
and input gradient, each in several programs (a, b: two input sets of the same
shapes, so both branches do the same work):

  plain   the op alone: `op(a)`.
  cond    `lax.cond(p, lambda: op(a), lambda: op(b))`, p a traced argument.
  switch  `lax.switch(i, [lambda: op(b), lambda: op(a)])`, i a traced argument.
  while   `lax.fori_loop(0, n, body, zeros)`, n = 1 traced; the body runs op on
          a, its kernel and cotangent scaled by the loop index + 1 (else XLA
          hoists op out of the loop).
  select  `jnp.where(p, op(a), op(b))`: both branches run, then a select.

Expected: cond, switch and while cost about what plain does (one op runs),
select about twice that. Each program is compiled and warmed, then all run
round-robin, once per round (several calls when fast, see --min_sample_s), so
a change in machine load hits all alike; the median round is kept.
`--ops=kernel_grad,kernel_grad_by_hand` also times the kernel gradient written
by hand as an NHWC/HWIO convolution.

From the compiled HLO (`jit(f).lower(...).compile().as_text()`) it reports, for
every convolution, what XLA made of it (a fusion with its kind, e.g.
`__ynn_fusion`, a custom call, or a bare `convolution`), the computation it
sits in (entry, conditional branch, while body) and its `dim_labels`.

  python benchmarks/cond_conv.py --output=/tmp/cond_conv.md
  python benchmarks/cond_conv.py --ops=kernel_grad,kernel_grad_by_hand
  XLA_FLAGS=--xla_cpu_use_xnnpack=false python benchmarks/cond_conv.py
"""

import collections
from collections.abc import Callable, Sequence
import dataclasses
import importlib.metadata
import os
import platform
import re
import shlex
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_BATCH = flags.DEFINE_integer('batch', 8, 'Batch size.')
_SIZE = flags.DEFINE_integer('size', 32, 'Image height and width.')
_CHANNELS = flags.DEFINE_integer('channels', 64, 'Input = output channels.')
_WINDOW = flags.DEFINE_integer('window', 3, 'Kernel height and width.')
# Not 'repeats': benchmarks.accelerator defines that flag in the same tests.
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds.')
_MIN_SAMPLE_S = flags.DEFINE_float(
    'min_sample_s',
    0.05,
    'A program whose first run is shorter runs this long (up to 20 calls) per'
    ' sample; a sample is the mean call.',
)
_OPS = flags.DEFINE_list(
    'ops', 'forward,kernel_grad,input_grad', 'Ops to time (see OPS).'
)
_VARIANTS = flags.DEFINE_list(
    'variants', 'plain,cond,switch,while,select', 'Programs (see VARIANTS).'
)
_HLO = flags.DEFINE_bool(
    'hlo', True, 'Print the convolution lines of the compiled HLO.'
)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Also write the tables as markdown to this file.'
)

Args = tuple[jax.Array, jax.Array, jax.Array]  # x, kernel, output cotangent.
DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The convolution under test: stride 1, SAME padding, NHWC/HWIO."""
  return lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=DIMENSION_NUMBERS
  )


def forward(x: jax.Array, kernel: jax.Array, g: jax.Array) -> jax.Array:
  """The convolution itself (g unused)."""
  del g
  return conv(x, kernel)


def kernel_grad(x: jax.Array, kernel: jax.Array, g: jax.Array) -> jax.Array:
  """The cotangent g pulled back to the kernel (a backward-filter conv)."""
  _, vjp = jax.vjp(lambda k: conv(x, k), kernel)
  return vjp(g)[0]


def input_grad(x: jax.Array, kernel: jax.Array, g: jax.Array) -> jax.Array:
  """The cotangent g pulled back to the input (a backward-data conv)."""
  _, vjp = jax.vjp(lambda y: conv(y, kernel), x)
  return vjp(g)[0]


def kernel_grad_by_hand(
    x: jax.Array, kernel: jax.Array, g: jax.Array
) -> jax.Array:
  """kernel_grad written as a convolution already in NHWC/HWIO form.

  Input channels play the batch, the batch plays the input channels and g is
  the (HxW) kernel: what XLA:CPU's conv canonicalization makes of the
  backward-filter conv, here by hand so it also holds inside a branch.
  """
  window = kernel.shape[0]
  pad = ((window - 1) // 2, window // 2)  # SAME's padding, stride 1.
  out = lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)),  # (C_in, H, W, N)
      jnp.transpose(g, (1, 2, 0, 3)),  # (H, W, N, C_out)
      (1, 1),
      (pad, pad),
      dimension_numbers=DIMENSION_NUMBERS,
  )  # (C_in, window, window, C_out)
  return jnp.transpose(out, (1, 2, 0, 3))


OPS: dict[str, Callable[..., jax.Array]] = {
    'forward': forward,
    'kernel_grad': kernel_grad,
    'input_grad': input_grad,
    'kernel_grad_by_hand': kernel_grad_by_hand,
}


def _while(op, a: Args, b: Args, p: jax.Array) -> jax.Array:
  del b
  x, kernel, g = a
  out = jax.eval_shape(op, *a)

  def body(i, carry):
    del carry
    # Scaling by i + 1 ties the op to the loop, else XLA hoists it out; the
    # trip count is the traced predicate (1), so XLA keeps a real loop.
    scale = (i + 1).astype(x.dtype)
    return op(x, kernel * scale, g * scale)

  zeros = jnp.zeros(out.shape, out.dtype)
  return lax.fori_loop(0, p.astype(jnp.int32), body, zeros)


# Each program is f(op, a, b, p) with p the traced predicate True.
VARIANTS = {
    'plain': lambda op, a, b, p: op(*a),
    'cond': lambda op, a, b, p: lax.cond(p, lambda: op(*a), lambda: op(*b)),
    'switch': lambda op, a, b, p: lax.switch(
        p.astype(jnp.int32), [lambda: op(*b), lambda: op(*a)]
    ),
    'while': _while,
    'select': lambda op, a, b, p: jnp.where(p, op(*a), op(*b)),
}


def program(variant: str, op: str) -> Callable[..., jax.Array]:
  """The jitted program `variant` around op `op`: f(a, b, p)."""
  wrapper, fn = VARIANTS[variant], OPS[op]
  return jax.jit(lambda a, b, p: wrapper(fn, a, b, p))


def make_inputs(
    batch: int, size: int, channels: int, window: int, seed: int = 0
) -> tuple[Args, Args, jax.Array]:
  """Two input sets (x, kernel, cotangent) and the predicate True."""
  rng = np.random.default_rng(seed)

  def one() -> Args:
    x = rng.standard_normal((batch, size, size, channels), np.float32)
    k = rng.standard_normal((window, window, channels, channels), np.float32)
    g = rng.standard_normal((batch, size, size, channels), np.float32)
    return tuple(jnp.asarray(v) for v in (x, k / (window * channels), g))

  return one(), one(), jnp.asarray(True)


# ----------------------------------------------------------------- HLO ---

_HEADER = re.compile(r'^(ENTRY )?%([\w.\-]+) .*\{$')
_INSTRUCTION = re.compile(r'^\s*(ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(')
_NAME = re.compile(r'%([\w.\-]+)')
_CALLS = re.compile(r'calls=%([\w.\-]+)')
_BRANCHES = re.compile(r'branch_computations=\{([^}]*)\}')
_TRUE_FALSE = re.compile(r'(?:true|false)_computation=%([\w.\-]+)')
_BODY = re.compile(r'body=%([\w.\-]+)')
_FUSION_KIND = re.compile(r'kind=(\w+)')
_FUSION_CONFIG = re.compile(r'"fusion_config":\{"kind":"(\w+)"')
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_DIM_LABELS = re.compile(r'dim_labels=([\w>\-]+)')
_NOISE = re.compile(r', (metadata|backend_config|frontend_attributes)=.*$')


@dataclasses.dataclass(frozen=True)
class ConvSite:
  """One convolution in a compiled HLO module.

  Attributes:
    form: 'convolution' (the bare instruction), 'fusion:<kind>' (inside a
      fusion; <kind> the backend's, e.g. __ynn_fusion, or the HLO fusion kind)
      or 'custom-call:<target>'.
    where: The non-fusion computations around it, innermost first, e.g.
      'conditional branch < entry'.
    dim_labels: The convolution's dim_labels ('' for a custom call).
    line: The HLO line, without metadata and backend config.
  """

  form: str
  where: str
  dim_labels: str
  line: str

  def describe(self) -> str:
    labels = f' {self.dim_labels}' if self.dim_labels else ''
    return f'{self.form} in {self.where}{labels}'


def conv_sites(hlo_text: str) -> list[ConvSite]:
  """Every convolution of an optimized HLO module's text, with its context."""
  computations: dict[str, list[str]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group(2)
      computations[current] = []
      if header.group(1):
        entry = current
    elif line.strip() == '}':
      current = None
    elif current is not None:
      computations[current].append(line)
  instructions = [  # (computation, opcode, line)
      (name, match.group(3), line)
      for name, lines in computations.items()
      for line in lines
      if (match := _INSTRUCTION.match(line))
  ]

  # callee -> (role, caller computation, form if it is a fusion).
  callers: dict[str, tuple[str, str, str | None]] = {}
  for name, opcode, line in instructions:
    role, form, callees = f'{opcode} callee', None, _CALLS.findall(line)
    if opcode == 'fusion':
      kind = (_FUSION_CONFIG.search(line) or _FUSION_KIND.search(line))[1]
      role, form = 'fusion', f'fusion:{kind}'
    elif opcode == 'conditional':
      branches = _BRANCHES.search(line)
      role = 'conditional branch'
      callees = (
          _NAME.findall(branches[1]) if branches else _TRUE_FALSE.findall(line)
      )
    elif opcode == 'while':
      role, callees = 'while body', _BODY.findall(line)[:1]
    for callee in callees:
      callers[callee] = (role, name, form)

  def context(computation: str) -> tuple[str | None, str]:
    """(fusion form or None, the non-fusion computations around it)."""
    form, path, seen = None, [], set()
    while computation in callers and computation not in seen | {entry}:
      seen.add(computation)
      role, computation, fusion_form = callers[computation]
      if role == 'fusion':
        form = form or fusion_form
      else:
        path.append(role)
    return form, ' < '.join(path + ['entry'])

  sites = []
  for name, opcode, line in instructions:
    target = _TARGET.search(line)
    is_conv_call = (
        opcode == 'custom-call' and target and 'conv' in target[1].lower()
    )
    if opcode != 'convolution' and not is_conv_call:
      continue
    fusion_form, where = context(name)
    form = f'custom-call:{target[1]}' if is_conv_call else fusion_form
    labels = _DIM_LABELS.search(line)
    labels = labels[1] if labels else ''
    line = _NOISE.sub('', line.strip())
    sites.append(ConvSite(form or 'convolution', where, labels, line))
  return sites


def summarize(sites: Sequence[ConvSite]) -> str:
  """'2x fusion:__ynn_fusion in entry b01f_01io->b01f'-style summary."""
  counts = collections.Counter(site.describe() for site in sites)
  return '; '.join(f'{n}x {what}' for what, n in counts.items()) or 'none'


# -------------------------------------------------------------- timing ---


def time_once(fn: Callable[..., jax.Array], *args, calls: int = 1) -> float:
  """Mean seconds per call of fn over `calls` calls, each waited for."""
  start = time.perf_counter()
  for _ in range(calls):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / calls


def cpu_name() -> str:
  """The CPU model, from /proc/cpuinfo where there is one."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> list[str]:
  """Versions, machine and flags, one 'key: value' string each."""
  load = ', '.join(f'{x:.2f}' for x in os.getloadavg())
  return [
      f'jax {jax.__version__}, jaxlib {importlib.metadata.version("jaxlib")},'
      f' numpy {np.__version__}, Python {platform.python_version()}',
      f'backend: {jax.default_backend()} ({jax.devices()[0].device_kind}),'
      f' {os.cpu_count()} logical CPUs: {cpu_name()}',
      f'XLA_FLAGS: {os.environ.get("XLA_FLAGS", "(unset)")}',
      f'load average at the end: {load}',
  ]


def markdown_tables(
    config: str,
    variants: Sequence[str],
    ops: Sequence[str],
    ms: dict[tuple[str, str], float],
    sites: dict[tuple[str, str], list[ConvSite]],
    env: Sequence[str],
    command: str,
) -> str:
  """The timing table (ms, x plain) and the HLO table, as markdown."""
  out = [f'{config}\n', f'```\n{command}\n```\n']
  out += [f'- {line}' for line in env]
  head = '| program |' + ''.join(f' {op} ms | x plain |' for op in ops)
  out += ['', head, '|---|' + '---:|---:|' * len(ops)]
  for variant in variants:
    row = f'| {variant} |'
    for op in ops:
      base = ms.get(('plain', op))
      value = ms[(variant, op)]
      ratio = f'{value / base:.2f}' if base else ''
      row += f' {value:.1f} | {ratio} |'
    out.append(row)
  out += ['', '| program |' + ''.join(f' {op} |' for op in ops)]
  out.append('|---|' + '---|' * len(ops))
  for variant in variants:
    cells = ''.join(f' {summarize(sites[(variant, op)])} |' for op in ops)
    out.append(f'| {variant} |{cells}')
  return '\n'.join(out) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  ops, variants = _OPS.value, _VARIANTS.value
  for kind, names, valid in (('op', ops, OPS), ('variant', variants, VARIANTS)):
    for name in names:
      if name not in valid:
        raise app.UsageError(f'unknown {kind} {name!r}; valid: {sorted(valid)}')
  a, b, p = make_inputs(
      _BATCH.value, _SIZE.value, _CHANNELS.value, _WINDOW.value
  )
  config = (
      f'conv {_BATCH.value}x{_SIZE.value}x{_SIZE.value}x{_CHANNELS.value}'
      f' (NHWC) * {_WINDOW.value}x{_WINDOW.value}x{_CHANNELS.value}x'
      f'{_CHANNELS.value} (HWIO), SAME, float32; median of'
      f' {_ROUNDS.value} interleaved rounds'
  )
  print(config, flush=True)

  compiled, sites, calls = {}, {}, {}
  for variant in variants:
    for op in ops:
      key, start = (variant, op), time.perf_counter()
      compiled[key] = exe = program(variant, op).lower(a, b, p).compile()
      sites[key] = conv_sites(exe.as_text())
      compile_s = time.perf_counter() - start
      first_s = time_once(exe, a, b, p)
      warm_s = min(first_s, time_once(exe, a, b, p))
      calls[key] = min(20, max(1, round(_MIN_SAMPLE_S.value / warm_s)))
      print(
          f'{variant:>7} {op:<12} compile {compile_s:5.2f} s, first run'
          f' {first_s * 1e3:8.1f} ms: {summarize(sites[key])}',
          flush=True,
      )

  if _HLO.value:
    print('\nConvolution lines of the compiled HLO:')
    for (variant, op), found in sites.items():
      for site in found:
        print(f'  [{variant} {op}] ({site.describe()})\n    {site.line}')

  samples = collections.defaultdict(list)
  for round_ in range(_ROUNDS.value):
    for key, exe in compiled.items():
      samples[key].append(time_once(exe, a, b, p, calls=calls[key]))
    print(f'round {round_ + 1}/{_ROUNDS.value} done', flush=True)
  ms = {key: statistics.median(s) * 1e3 for key, s in samples.items()}

  command = shlex.join(['python', *sys.argv])
  if os.environ.get('XLA_FLAGS'):
    command = f'XLA_FLAGS={shlex.quote(os.environ["XLA_FLAGS"])} {command}'
  text = markdown_tables(
      config, variants, ops, ms, sites, environment(), command
  )
  print('\n' + text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  app.run(main)
