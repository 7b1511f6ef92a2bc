"""Entry point of GreenCert's helper processes.

``python -m greencert.validation.worker`` validates stacked statistics
(:class:`greencert.validation.batch.ValidatorProcess`);
``python -m greencert.validation.worker fleet FD`` is the helper of a fleet
run (:class:`greencert.fleet.FleetHelper`), FD being its end of the shared
bundle queue. A module of its own so that the objects it sends back are
pickled under their importable names, not under ``__main__``.
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["fleet"]:
        from greencert.fleet import serve_helper

        sys.exit(serve_helper(int(sys.argv[2])))
    from greencert.validation.batch import serve

    sys.exit(serve())
