"""The ``marketspine`` command line and the demo: flags parsed, then thin calls into the
library. The only place, with the demo, that starts the simulator.

May import: anything in the package, ``sim`` included.
"""
