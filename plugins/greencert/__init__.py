"""GreenCert: certify the energy and carbon cost of AI inference tokens.

The package is organised by the data's flow:

    sources      -> write evidence bundles (simulator, Prometheus, grid APIs)
    bundle       -> read and describe an evidence bundle (format v1)
    validation   -> Great Expectations suites over the bundle
    compute      -> unit-safe energy, token and carbon figures (pint)
    grading      -> grade figures against a versioned scheme
    certificate  -> build, render, sign and publish certificates
    pipeline     -> the stage functions the DAG and the CLI both call
"""

__version__ = "0.1.0"
