"""Entry point of the validation child process (``python -m greencert.validation.worker``).

A module of its own so that the objects it sends back are pickled under their
importable names (``greencert.validation.batch.*``), not under ``__main__``.
"""

import sys

from greencert.validation.batch import serve

if __name__ == "__main__":
    sys.exit(serve())
