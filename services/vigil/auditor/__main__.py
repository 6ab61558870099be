"""``python -m vigil.auditor``"""

from vigil.auditor.app import DEFINITION
from vigil.service.app import run

if __name__ == "__main__":
    run(DEFINITION)
