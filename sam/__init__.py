"""Sharpness-Aware Minimization: the method at the top, as pure functions.

  perturbation  the ascent perturbation eps and its balls
  methods       the SAM family (SGD included) behind one interface
  groups        m-sharpness groups and gradient accumulation, around any
                method
  losses        the training objective and its one loss builder
  optim         the base optimizer and the learning-rate schedule (optax)
  sharpness     the sharpness max_{||eps|| <= rho} L(w + eps) - L(w)

The run machinery is in sam/run/, the analyses of trained runs in
sam/analysis/.
"""
