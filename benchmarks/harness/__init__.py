"""The measuring harness of the benchmarks: the peers and the timed loops they share.

- :mod:`harness.envs`: a seeded synthetic OHLCV series, adapters for gym-anytrading and
  Gym-Trading-Env, two lean numpy reference envs (``ref``, ``ref_vec64``) and the timed
  stepping loop every env, ours included, is measured with.
- :mod:`harness.models`: the peer sequence models (ncps CfC and LTC, mambapy, a textbook
  Mamba loop, ``nn.LSTM``, ``nn.TransformerEncoder``) and the timed training and latency loops.
- :mod:`harness.workers`: runs one measurement in a fresh interpreter and reads its result.

Every measurement runs in its own process, so one case's imports, global side effects
(Gym-Trading-Env installs ``warnings.filterwarnings("error")``) and peak memory never reach
another. The peers are installed by ``pip install -e ".[bench]"``.
"""
