"""KeepFIT V2 on CFP (`--config=configs/cfp.py`, or `configs/cfp.py:demo` for the built-in synthetic demo)."""
from configs import common


def get_config(arg=None):
  return common.get_config("cfp", arg)
