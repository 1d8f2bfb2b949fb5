"""Write the development secrets into .data/dev.env if they are not there yet (make manage)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.environment import data_dir, ensure_dev_env

if __name__ == "__main__":
    ensure_dev_env(data_dir())
