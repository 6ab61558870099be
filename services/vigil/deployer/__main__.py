"""``python -m vigil.deployer``"""

from vigil.deployer.app import DEFINITION
from vigil.service.app import run

if __name__ == "__main__":
    run(DEFINITION)
