"""Config-string knobs: `configs/cifar.py:model=wrn28_10,rho=0.1`.

Every config file declares its knobs once, with a type, a default and
(optionally) the valid choices; `parse` turns the text after ':' into typed
values or fails with one line naming the knob and what it accepts.
"""

from typing import Any, NamedTuple, Sequence

TRUE_WORDS = ('1', 'true', 'yes')
EXAMPLES = {int: 1, float: 0.1}
FALSE_WORDS = ('0', 'false', 'no')


class Knob(NamedTuple):
  """One knob: its value type, its default and, if any, its valid values.

  A default of None means "unset": the config keeps its own value.
  """

  type: type
  default: Any
  choices: Sequence[Any] = ()


class KnobError(ValueError):
  """A config string holds an unknown knob or a value it cannot take."""


def _convert(name: str, knob: Knob, text: str, source: str) -> Any:
  if knob.type is bool:
    if text.lower() in TRUE_WORDS + FALSE_WORDS:
      return text.lower() in TRUE_WORDS
    raise KnobError(f'{source}: {name}={text!r}: takes true or false')
  try:
    value = knob.type(text)
  except ValueError:
    example = (
        knob.default
        if knob.default is not None
        else EXAMPLES.get(knob.type, '')
    )
    raise KnobError(
        f'{source}: {name}={text!r}: takes {knob.type.__name__} values, '
        f'e.g. {name}={example}'
    ) from None
  if knob.type is float and value != value:  # NaN.
    raise KnobError(f'{source}: {name}={text!r}: takes a number, not nan')
  return value


def parse(
    arg: str | None, knobs: dict[str, Knob], source: str
) -> dict[str, Any]:
  """Parses 'k=v,k=v' over the declared knobs.

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg` (may be empty).
    knobs: every accepted knob.
    source: the config file, named in errors.

  Returns:
    knob name -> typed value (the default where the string sets none).

  Raises:
    KnobError: an unknown knob, a value of the wrong type or not among the
      choices; one line.
  """
  values = {name: knob.default for name, knob in knobs.items()}
  for item in filter(None, (arg or '').split(',')):
    name, sep, text = item.partition('=')
    if not sep or name not in knobs:
      raise KnobError(
          f'{source}: bad knob {item!r}; valid knobs: '
          f'{", ".join(f"{k}=" for k in knobs)}'
      )
    values[name] = _convert(name, knobs[name], text, source)
  for name, value in values.items():
    choices = knobs[name].choices
    if choices and value is not None and value not in choices:
      raise KnobError(f'{source}: {name}={value!r}; valid: {list(choices)}')
  return values
