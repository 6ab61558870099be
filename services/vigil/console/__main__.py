"""``python -m vigil.console``"""

from vigil.console.app import main

if __name__ == "__main__":
    main()
