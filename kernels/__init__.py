"""Device code of tritongru: ``@triton.jit`` kernels and the helpers they share (installed as
``tritongru.kernels``). Host code that launches them lives in :mod:`tritongru.launchers`."""
