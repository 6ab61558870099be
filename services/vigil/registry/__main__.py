"""``python -m vigil.registry``"""

from vigil.registry.app import DEFINITION
from vigil.service.app import run

if __name__ == "__main__":
    run(DEFINITION)
