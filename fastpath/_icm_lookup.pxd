# For the compiled engine's ICM step: the lookup inside the engine's own read transaction.
from libc.stdint cimport int64_t

cdef object lookup_txn(object txn, object store, str company, str caller, int64_t at, int max_age, tuple order)
