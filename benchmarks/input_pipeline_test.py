"""The host-core demand: a step rate over a transform's per-core rate."""

from benchmarks import input_pipeline


def test_cores_needed_divides_the_demand_by_the_rate_per_core():
  assert input_pipeline.cores_needed(20_000, 4_000) == 5.0


def test_demand_rows_match_cifar_steps_to_cifar_transforms():
  rows = {
      'cifar/basic': input_pipeline.Rate(wall=20_000.0, cpu=10_000.0),
      'imagenet/train_224': input_pipeline.Rate(wall=800.0, cpu=400.0),
  }
  record = {
      'device_kind': 'NVIDIA H200',
      'steps': [
          {'name': 'wrn', 'images_per_s': 30_000.0, 'image_size': 32},
          {'name': 'resnet50', 'images_per_s': 2_000.0, 'image_size': 224},
      ],
  }
  table = input_pipeline._demand_rows(rows, [record])
  ladder = len(input_pipeline.DEMAND_LADDER)
  assert table[0][2] == {'cifar/basic': 0.1, 'imagenet/train_224': 2.5}
  assert table[ladder][2] == {'cifar/basic': 3.0}
  assert table[ladder + 1][2] == {'imagenet/train_224': 5.0}
