"""``python -m vigil.trainer``"""

from vigil.service.app import run
from vigil.trainer.app import DEFINITION

if __name__ == "__main__":
    run(DEFINITION)
