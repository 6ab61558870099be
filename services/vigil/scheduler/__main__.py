"""``python -m vigil.scheduler``"""

from vigil.scheduler.app import DEFINITION
from vigil.service.app import run

if __name__ == "__main__":
    run(DEFINITION)
