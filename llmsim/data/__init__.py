"""Where llmsim finds its real input data (profiles, traces, measured runs).

Resolution order for a dataset path:

1. ``$LLMSIM_DATA_DIR/<relpath>`` when the environment variable is set;
2. the per-user cache, ``$XDG_CACHE_HOME/llmsim/data/<relpath>`` (default
   ``~/.cache/llmsim/data``), which ``llmsim data pull`` fills.

A missing dataset raises :class:`llmsim.errors.DataNotFoundError` naming the dataset and the
command that downloads it.
"""

from llmsim.data.paths import data_dirs, dataset_path, user_cache_dir

__all__ = ["data_dirs", "dataset_path", "user_cache_dir"]
