"""A run that lives on Cloud Storage, against a real GCS API on localhost.

gcp-storage-emulator (from PyPI) serves the GCS JSON API in this process;
train.py runs in subprocesses with a gs:// workdir: train, kill -9,
resume, finish, rerun (a no-op), then results.tables over the bucket.
Nothing may be written to local disk.

Endpoints: etils.epath reaches the emulator through gcsfs (EPATH_USE_TF=false;
TensorFlow's GCS client has its endpoint compiled in and cannot be pointed
at an emulator), and orbax's tensorstore through TENSORSTORE_GCS_HTTP_URL.
TensorBoard event files are written by TensorFlow's filesystem for the same
reason not through the emulator, so these runs set run.tensorboard=False.

The emulator lacks two behaviours of GCS that tensorstore's OCDBT manifest
updates rely on: media reads carry no x-goog-generation header, and the
ifGenerationNotMatch / ifGenerationMatch preconditions of a read are
ignored (GCS answers 304 / 412). Tensorstore then fails a checkpoint write
with "Malformed StorageGeneration" whenever it re-reads a manifest it has
just written. It also ignores ifGenerationMatch on uploads and deletes,
which the workdir lock (sam/run/workdir_lock.py) relies on: 0 creates an
object only if it is absent. `_read_preconditions` and `_write_preconditions`
add these to the emulator in this process, as GCS documents them.
"""

import http
import json
import os
import signal
import socket
import subprocess
import sys
import time

from gcp_storage_emulator import exceptions as emulator_exceptions
from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.handlers import objects as emulator_objects
from google.auth import credentials
from google.cloud import storage
import pytest

from configs import smoke
from sam.run import experiment
from sam.run import workdir_lock

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
BUCKET = 'sam-runs'
WORKDIR = f'gs://{BUCKET}/runs/digits/smoke'


def _read_preconditions(download):
  """The emulator's media download with GCS's generation header and read
  preconditions (see the module doc)."""

  def read(request, response, storage, *args, **kwargs):
    names = request.params['bucket_name'], request.params['object_id']
    try:
      generation = str(storage.get_file_obj(*names)['generation'])
    except emulator_exceptions.NotFound:
      response.status = http.HTTPStatus.NOT_FOUND
      return None
    response['x-goog-generation'] = generation
    match = request.query.get('ifGenerationMatch')
    not_match = request.query.get('ifGenerationNotMatch')
    if match and match[0] != generation:
      response.status = http.HTTPStatus.PRECONDITION_FAILED
      return None
    if not_match and not_match[0] == generation:
      response.status = http.HTTPStatus.NOT_MODIFIED
      return None
    return download(request, response, storage, *args, **kwargs)

  return read


def _write_preconditions(handler):
  """The emulator's upload or delete with GCS's ifGenerationMatch
  precondition: the object's generation must match, 0 for none (see the
  module doc)."""

  def write(request, response, storage, *args, **kwargs):
    match = request.query.get('ifGenerationMatch')
    if match:
      name = request.params.get('object_id') or (
          request.query['name'][0]
          if 'name' in request.query
          else request.data['meta']['name']
      )
      try:
        obj = storage.get_file_obj(request.params['bucket_name'], name)
        generation = str(obj['generation'])
      except emulator_exceptions.NotFound:
        generation = '0'
      if match[0] != generation:
        response.status = http.HTTPStatus.PRECONDITION_FAILED
        return None
    return handler(request, response, storage, *args, **kwargs)

  return write


@pytest.fixture(scope='module')
def emulator():
  """(environment for the run processes, the bucket as a client sees it)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  monkeypatch = pytest.MonkeyPatch()
  for original, guard in (
      (emulator_objects.download, _read_preconditions),
      (emulator_objects.insert, _write_preconditions),
      (emulator_objects.delete, _write_preconditions),
  ):
    guarded = guard(original)
    monkeypatch.setattr(emulator_objects, original.__name__, guarded)
    # The server's route table holds the handler functions themselves.
    for _, handlers in emulator_server.HANDLERS:
      for method, handler in list(handlers.items()):
        if handler is original:
          monkeypatch.setitem(handlers, method, guarded)
  # The emulator serves one request at a time: a run stopped mid-request
  # (SIGSTOP below) would hold it, and every other client with it, for
  # good. A read timeout drops such a request after 10 s; the run's client
  # retries it when it resumes, as it would a GCS error.
  monkeypatch.setattr(emulator_server.RequestHandler, 'timeout', 10)
  server = emulator_server.create_server(
      'localhost', port, in_memory=True, default_bucket=BUCKET
  )
  server._api.daemon = True  # pylint: disable=protected-access
  server.start()
  url = f'http://localhost:{port}'
  env = {
      **os.environ,
      'EPATH_USE_TF': 'false',
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
      'FSSPEC_GCS_TOKEN': 'anon',
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'dummy',
      'STORAGE_EMULATOR_HOST': url,
      'TENSORSTORE_GCS_HTTP_URL': url,
      'PYTHONPATH': REPO,
  }
  client = storage.Client(
      project='test',
      credentials=credentials.AnonymousCredentials(),
      client_options={'api_endpoint': url},
  )
  yield env, client.bucket(BUCKET)
  server.stop()
  monkeypatch.undo()


def _train(env, cwd, *extra, workdir=WORKDIR):
  return subprocess.Popen(
      [
          sys.executable,
          os.path.join(REPO, 'train.py'),
          f'--config={os.path.join(REPO, "configs", "smoke.py")}',
          f'--workdir={workdir}',
          '--config.run.tensorboard=False',
          *extra,
      ],
      cwd=cwd,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _finish(process, timeout_s=600):
  out, err = process.communicate(timeout=timeout_s)
  assert process.returncode == 0, err[-3000:]
  return out


def _records(text):
  """(evaluation records, steps of the training records) of metrics.jsonl.

  Training records average the steps since the previous record, and a
  resumed run starts its average afresh, so only their steps are compared.
  """
  records = [json.loads(line) for line in text.splitlines()]
  evaluations = [r for r in records if 'test_error' in r]
  return evaluations, [r['step'] for r in records if 'train_loss' in r]


def _object(bucket, path):
  return bucket.blob(path).download_as_text()


def _exists(bucket, path):
  return bucket.blob(path).exists()


def _committed_steps(bucket, run='runs/digits/smoke'):
  prefix = f'{run}/checkpoints/'
  return sorted(
      int(blob.name[len(prefix) :].split('/')[0])
      for blob in bucket.list_blobs(prefix=prefix)
      if blob.name.count('/') == 5 and blob.name.endswith('/commit_success.txt')
  )


@pytest.fixture(scope='module')
def local_reference(tmp_path_factory):
  """The smoke run, uninterrupted, in a local workdir: (summary, workdir)."""
  workdir = tmp_path_factory.mktemp('local_reference')
  return (
      experiment.train_and_evaluate(smoke.get_config(), str(workdir)),
      workdir,
  )


def test_a_gs_workdir_trains_resumes_finishes_and_aggregates(
    emulator, local_reference, tmp_path
):
  env, client = emulator
  cwd = tmp_path / 'cwd'  # The processes' working directory: stays empty.
  cwd.mkdir()
  reference, reference_dir = local_reference

  process = _train(env, cwd)
  deadline = time.time() + 300
  while not _committed_steps(client):
    if process.poll() is not None:
      pytest.fail(process.communicate()[1][-3000:])
    assert time.time() < deadline
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  # Killed mid-run: a checkpoint before the last step, no summary.
  assert 0 < _committed_steps(client)[-1] < 23
  assert not _exists(client, 'runs/digits/smoke/summary.json')

  # Rerun: resumes from the bucket's checkpoint and finishes.
  _finish(_train(env, cwd))
  summary = json.loads(_object(client, 'runs/digits/smoke/summary.json'))
  assert summary['finished'] and summary['num_steps'] == 23
  # Same computation as the uninterrupted local run.
  assert summary['final'] == reference['final']
  metrics = _object(client, 'runs/digits/smoke/metrics.jsonl')
  # The evaluations of the uninterrupted run, and each step logged once.
  assert _records(metrics) == _records(
      (reference_dir / 'metrics.jsonl').read_text()
  )
  config_record = _object(client, 'runs/digits/smoke/config.json')

  # A finished run rerun changes nothing.
  out = _finish(_train(env, cwd))
  assert 'test error' in out
  assert _object(client, 'runs/digits/smoke/metrics.jsonl') == metrics
  assert _object(client, 'runs/digits/smoke/config.json') == config_record
  assert json.loads(_object(client, 'runs/digits/smoke/summary.json')) == (
      summary
  )

  # The result tables read and write the bucket.
  tables = subprocess.run(
      [
          sys.executable,
          '-m',
          'results.tables',
          f'--runs_dir=gs://{BUCKET}/runs',
          f'--output_dir=gs://{BUCKET}/results',
      ],
      cwd=cwd,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert tables.returncode == 0, tables.stderr[-3000:]
  assert '1 finished runs' in _object(client, 'results/tables.md')
  assert os.listdir(cwd) == []
  assert not any(name.startswith('gs:') for name in os.listdir(REPO))


def test_pretrained_weights_load_from_a_bucket(emulator, tmp_path):
  env, client = emulator
  export = (
      'import jax, jax.numpy as jnp, models\n'
      'from models import pretrained\n'
      'model = models.create_model("wrn_mini", 10)\n'
      'variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)),'
      ' train=False)\n'
      f'pretrained.save(variables, "gs://{BUCKET}/pretrained/wrn_mini")\n'
  )
  subprocess.run(
      [sys.executable, '-c', export], env=env, check=True, timeout=300
  )
  assert _exists(client, 'pretrained/wrn_mini/_METADATA')

  def finetune(checkpoint, workdir):
    return subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, 'train.py'),
            f'--config={os.path.join(REPO, "configs", "smoke.py")}',
            f'--workdir=gs://{BUCKET}/{workdir}',
            '--config.run.tensorboard=False',
            f'--config.model.init_checkpoint={checkpoint}',
            '--config.optim.num_steps=4',
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

  missing = finetune(f'gs://{BUCKET}/pretrained/none', 'runs/missing')
  assert missing.returncode != 0
  assert missing.stderr.strip().splitlines()[-1] == (
      f"error: config.model.init_checkpoint = 'gs://{BUCKET}/pretrained/none'"
      ': no such path'
  )
  done = finetune(f'gs://{BUCKET}/pretrained/wrn_mini', 'runs/finetuned')
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads(_object(client, 'runs/finetuned/summary.json'))
  assert summary['finished'] and summary['num_steps'] == 4
  assert os.listdir(tmp_path) == []


def _objects(bucket, prefix):
  """{name: generation} of every object under `prefix`."""
  return {b.name: b.generation for b in bucket.list_blobs(prefix=prefix)}


def test_two_runs_on_one_gs_workdir_one_is_refused(
    emulator, local_reference, tmp_path
):
  env, client = emulator
  run = 'runs/digits/twice'
  workdir = f'gs://{BUCKET}/{run}'
  reference, _ = local_reference
  first = _train(env, tmp_path, workdir=workdir)
  deadline = time.time() + 300
  while not _committed_steps(client, run):
    if first.poll() is not None:
      pytest.fail(first.communicate()[1][-3000:])
    assert time.time() < deadline
    time.sleep(0.2)
  holder = json.loads(_object(client, f'{run}/.lock'))
  assert holder['pid'] == first.pid
  # Stopped (alive, holding the lock) while the second run tries, so that
  # the bucket changes only if the second run writes.
  first.send_signal(signal.SIGSTOP)
  try:
    before = _objects(client, run)
    second = _train(env, tmp_path, workdir=workdir)
    _, err = second.communicate(timeout=300)
    after = _objects(client, run)
  finally:
    first.send_signal(signal.SIGCONT)
  assert second.returncode == workdir_lock.BUSY_EXIT_CODE, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith(
      f"error: workdir '{workdir}' is in use by a live run: pid {first.pid} "
      f'on {socket.gethostname()} (since '
  ), err[-3000:]
  assert after == before
  _finish(first)
  summary = json.loads(_object(client, f'{run}/summary.json'))
  assert summary['final'] == reference['final']
  _, steps = _records(_object(client, f'{run}/metrics.jsonl'))
  assert steps == [5, 10, 15, 20, 23]
  assert not _exists(client, f'{run}/.lock')  # Released at the end.


def test_a_lock_whose_holder_is_gone_is_taken_over(emulator, tmp_path):
  env, client = emulator
  run = 'runs/digits/abandoned'
  # A holder on another machine that stopped refreshing an hour ago.
  gone = {
      'host': 'preempted-vm',
      'pid': 4242,
      'started': time.time() - 7200,
      'refreshed': time.time() - 3600,
  }
  client.blob(f'{run}/.lock').upload_from_string(json.dumps(gone))
  process = _train(env, tmp_path, workdir=f'gs://{BUCKET}/{run}')
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  assert (
      f'Taking over the lock of workdir gs://{BUCKET}/{run} from pid 4242 on '
      'preempted-vm' in err
  )
  assert 'test error' in out
  assert not _exists(client, f'{run}/.lock')
