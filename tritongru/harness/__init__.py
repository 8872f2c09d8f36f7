"""The measuring floor: everything that times, tunes and reports tritongru, built on top of the library.

A model imports :mod:`tritongru` and never this package. The harness is split by job:

- :mod:`~tritongru.harness.timing`: the one timer (device events on a GPU, one labelled wall-clock run under
  the interpreter), TF32 switches and the measured peaks;
- :mod:`~tritongru.harness.providers`: every contender, its label and colour and the adapter that runs it;
- :mod:`~tritongru.harness.grids` and :mod:`~tritongru.harness.bench`: the benchmark's grids and its run loop;
- :mod:`~tritongru.harness.search_space`, :mod:`~tritongru.harness.problems` and
  :mod:`~tritongru.harness.tuning`: the tuning search space and pruning, the tuning problems (one small
  builder per kernel), and the sweep that writes winners to :mod:`tritongru.tuning_cache`;
- :mod:`~tritongru.harness.results` and :mod:`~tritongru.harness.plots`: results files and their figures.

Imports go one way: the harness imports the library, the library never imports the harness.
"""
