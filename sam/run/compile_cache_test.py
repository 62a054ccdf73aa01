"""Tests for sam/run/compile_cache.py."""

import os

import jax
import pytest

from sam.run import compile_cache


@pytest.fixture
def no_cache():
  """JAX without a cache directory for the test, restored after it."""
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  jax.config.update('jax_compilation_cache_dir', previous)


def test_the_configured_directory_is_used(no_cache, tmp_path):
  directory = str(tmp_path / 'cache')
  assert compile_cache.enable(directory) == directory
  assert jax.config.jax_compilation_cache_dir == directory


def test_home_is_expanded_and_empty_turns_it_off(no_cache):
  assert compile_cache.enable('') is None
  assert jax.config.jax_compilation_cache_dir is None
  path = compile_cache.enable('~/.cache/sam_jax/compilation')
  assert path == os.path.expanduser('~/.cache/sam_jax/compilation')


def test_a_cache_jax_already_has_is_kept(no_cache, tmp_path):
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'env'))
  assert compile_cache.enable(str(tmp_path / 'config')) == str(tmp_path / 'env')
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'env')
