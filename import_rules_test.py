"""The import contract: imports run one way, with no cycles.

The graph is built from the source with `ast` (nothing is imported). Layers,
from the bottom: configs (data only), models and data (which know nothing of
training or of each other), the method (sam/*.py), the run machinery
(sam/run/), the analyses (sam/analysis/), then the entry points (train.py,
launch/, results/, benchmarks/). Tests may import anything but other tests.
"""

import ast
import collections
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
PACKAGES = (
    'configs',
    'sam',
    'models',
    'data',
    'launch',
    'results',
    'benchmarks',
)


def _module_name(path: str) -> str:
  relative = os.path.relpath(path, ROOT)[: -len('.py')].split(os.sep)
  if relative[-1] == '__init__':
    relative = relative[:-1]
  return '.'.join(relative)


def _sources() -> dict[str, str]:
  """Module name -> file path of every project module."""
  found = {'train': os.path.join(ROOT, 'train.py')}
  for package in PACKAGES:
    for folder, _, names in os.walk(os.path.join(ROOT, package)):
      for name in names:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          found[_module_name(path)] = path
  return found


MODULES = _sources()


def _target(name: str) -> str | None:
  """The project module `name` refers to (a module or a name in one)."""
  while name:
    if name in MODULES:
      return name
    name = name.rpartition('.')[0]
  return None


def _imports(path: str):
  """(imported name, at module level?) for every import in a file."""
  tree = ast.parse(open(path).read())
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, id(node) in top_level
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        yield f'{node.module}.{alias.name}', id(node) in top_level


def is_test(module: str) -> bool:
  return module.endswith('_test') or module == 'conftest'


def graph() -> dict[str, set[str]]:
  """Project module -> the project modules it imports (tests excluded)."""
  edges = collections.defaultdict(set)
  for module, path in MODULES.items():
    if is_test(module):
      continue
    for name, _ in _imports(path):
      target = _target(name)
      if target and target != module:
        edges[module].add(target)
  return edges


def layer(module: str) -> str:
  """The part of the architecture a module belongs to."""
  if module.startswith(('sam.run', 'sam.analysis')):
    return '.'.join(module.split('.')[:2])
  return module.split('.')[0]


# layer -> the layers it must not import.
FORBIDDEN = {
    'models': {
        'sam',
        'sam.run',
        'sam.analysis',
        'data',
        'launch',
        'results',
        'train',
        'benchmarks',
    },
    'data': {
        'sam',
        'sam.run',
        'sam.analysis',
        'models',
        'launch',
        'results',
        'train',
        'benchmarks',
    },
    'sam': {
        'sam.run',
        'sam.analysis',
        'launch',
        'results',
        'train',
        'benchmarks',
    },
    'sam.run': {'sam.analysis', 'launch', 'results', 'train', 'benchmarks'},
    'sam.analysis': {'launch', 'results', 'train', 'benchmarks'},
    'results': {'sam.run', 'launch', 'train', 'benchmarks'},
    # Launchers start runs, so they share two things with the run machinery:
    # the workdir lock (a live run is skipped) and the flags of fake CPU
    # devices (sam.run.workdir_lock, sam.run.distributed).
    'launch': {'sam.analysis', 'train', 'benchmarks'},
    'train': {'launch'},
}


def test_no_forbidden_arrows():
  bad = sorted(
      f'{module} -> {target}'
      for module, targets in graph().items()
      for target in targets
      if layer(target) in FORBIDDEN.get(layer(module), ())
  )
  assert not bad


def test_configs_import_only_ml_collections_and_each_other():
  allowed = set(sys.stdlib_module_names) | {'ml_collections'}
  bad = []
  for module, path in MODULES.items():
    if module.startswith('configs.') and not is_test(module):
      for name, _ in _imports(path):
        top = name.split('.')[0]
        if top not in allowed and not name.startswith('configs'):
          bad.append(f'{module} imports {name}')
  assert not bad


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
  """A cycle of `edges` if there is one (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for target in sorted(edges.get(node, ())):
      if state.get(target) == 'open':
        return stack[stack.index(target) :] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(edges):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_cycles_between_modules_or_layers():
  edges = graph()
  assert _cycle(edges) is None
  layers = collections.defaultdict(set)
  for module, targets in edges.items():
    layers[layer(module)] |= {layer(t) for t in targets} - {layer(module)}
  assert _cycle(layers) is None


def test_no_project_import_hidden_inside_a_function():
  hidden = sorted(
      f'{module} imports {name}'
      for module, path in MODULES.items()
      for name, top_level in _imports(path)
      if not top_level and _target(name)
  )
  assert not hidden


def test_no_test_imports_another_test_module():
  bad = sorted(
      f'{module} imports {_target(name)}'
      for module, path in MODULES.items()
      if is_test(module)
      for name, _ in _imports(path)
      if _target(name) and is_test(_target(name))
  )
  assert not bad


@pytest.mark.parametrize(
    'source,target,expected',
    [
        ('models.wrn', 'sam.losses', True),
        ('sam.methods', 'sam.run.step', True),
        ('sam.run.loop', 'sam.losses', False),
        ('train', 'launch.tpu', True),
        ('results.tables', 'sam.run.files', True),
        ('results.spectrum_plot', 'sam.analysis.hessian', False),
    ],
)
def test_the_contract_has_teeth(source, target, expected):
  assert (layer(target) in FORBIDDEN.get(layer(source), ())) == expected
  assert _cycle({'a': {'b'}, 'b': {'a'}}) == ['a', 'b', 'a']
