"""The run machinery: state, the pmapped step, the loop, checkpoints,
metric writers, config checks and multi-host setup.

`experiment.train_and_evaluate(config, workdir)` is what train.py calls.
"""
