"""``python -m vigil.monitor``"""

from vigil.monitor.app import DEFINITION
from vigil.service.app import run

if __name__ == "__main__":
    run(DEFINITION)
