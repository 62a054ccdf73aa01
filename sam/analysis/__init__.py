"""Analyses of trained runs (Section 4 of the paper): Hessian spectra,
sharpness and loss landscapes. Each writes a JSON record; results/ draws
the figures.

  python -m sam.analysis hessian --workdir=RUN
  python -m sam.analysis sharpness --workdir=RUN --rho=0.05
  python -m sam.analysis landscape --workdir=RUN --dims=2
"""
