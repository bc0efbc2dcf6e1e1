"""KeepFIT V2 on OCT (`--config=configs/oct.py`, or `configs/oct.py:demo` for the built-in synthetic demo)."""
from configs import common


def get_config(arg=None):
  return common.get_config("oct", arg)
