"""The one error base of benchsvc.

Everything a user can cause (a malformed workload file, an unknown version id, a kernel that cannot serve as
an oracle) raises a subclass of :class:`BenchsvcError`. The command line catches exactly these, prints
``Error: <message>`` on one line and exits 1; any other exception is a bug and keeps its traceback.
"""


class BenchsvcError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


class WorkloadError(BenchsvcError):
    """A workload file that cannot be used: the message names the file and the key."""


class UnknownVersionError(BenchsvcError):
    """A version id that is not in the registry."""


class UnknownWorkloadError(BenchsvcError):
    """A workload name that is neither a file nor a shipped workload."""


class CostModelError(BenchsvcError):
    """A cost-coefficient file that cannot be used."""


class KernelUnavailable(BenchsvcError):
    """The live kernel cannot serve as an engine here; the message says why."""


class LayoutNotReproduced(BenchsvcError):
    """The kernel fell back to other folio sizes, so its counters describe another layout."""


class ScaleInputError(BenchsvcError):
    """A CPU count or memcg layout the contention model cannot take."""
