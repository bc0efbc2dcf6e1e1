"""KeepFIT V2 on FFA (`--config=configs/ffa.py`, or `configs/ffa.py:demo` for the built-in synthetic demo)."""
from configs import common


def get_config(arg=None):
  return common.get_config("ffa", arg)
